"""What a backend must do for the job manager; the local process backend is the first one.

A backend starts ``python -m rsna_tui.jobs.runner <job folder>`` somewhere with stdout/stderr in
``log.txt``, tells whether it still runs, and cancels it. Everything else (events, folding,
queueing, retries) is backend-independent. Two backends: local process groups
(:mod:`rsna_tui.jobs.local`) and Slurm (:mod:`rsna_tui.jobs.slurm`), a :class:`QueueExecutor`: a
backend with a queue of its own, which waits for dependencies itself, runs arrays, and answers for
all active jobs in one :meth:`QueueExecutor.states` call per refresh, so that a cluster's login
node sees one ``squeue`` however many jobs run.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from rsna_tui.jobs.store import JobRow


@dataclass(frozen=True)
class Launched:
    """What the backend knows about a started job."""

    native_id: str
    host: str
    create_time: float | None = None
    #: The backend queued it (Slurm PENDING): the job reads ``queued`` until the backend runs it.
    queued: bool = False


@dataclass(frozen=True)
class Observed:
    """What a backend says about one job in a batch status call."""

    #: True: queued or running there; False: gone; None: this process cannot tell (another host).
    alive: bool | None
    #: Waiting in the backend's own queue (Slurm PENDING).
    waiting: bool = False
    #: For a job the backend ended: our status (failed, lost, cancelled), or None when the runner's
    #: ``finished`` event decides (Slurm COMPLETED, a local process that exited).
    ended: str | None = None
    #: The backend's own words (state and reason), for the job's error or message.
    reason: str = ""
    #: The backend ended it for reasons of its own (time limit, preemption, node failure): a new
    #: attempt may continue it.
    resubmit: bool = False


class Executor(Protocol):
    """A way of running job processes."""

    name: str
    #: A backend with a queue of its own (a :class:`QueueExecutor`): it takes a job whose dependencies
    #: still run, and allocates GPUs itself (GPU jobs take no slot of this machine).
    chains: bool

    def start(self, job_dir: Path, env: dict[str, str], cwd: Path) -> Launched:
        """Start the runner on ``job_dir`` detached from the caller."""

    def is_alive(self, job: JobRow) -> bool | None:
        """Whether the job's process still runs; None when this process cannot tell (another host)."""

    def cancel(self, job: JobRow, grace: float) -> bool:
        """Stop the job and all its processes (polite first, forced after ``grace`` seconds).

        Returns True when nothing of the job is left running.
        """


class QueueExecutor(Executor, Protocol):
    """A backend with its own queue (``chains`` is True): Slurm."""

    def start(self, job_dir: Path, env: dict[str, str], cwd: Path, after: Sequence[str] = ()) -> Launched:
        """Submit the runner on ``job_dir``, to start once the jobs with native ids ``after`` succeeded."""

    def states(self, jobs: Sequence[JobRow]) -> dict[int, Observed]:
        """The state of many launched jobs at once (one backend query), by job id."""

    def start_array(self, job_dirs: Sequence[Path], env: dict[str, str], cwd: Path,
                    after: Sequence[str] = ()) -> list[Launched]:
        """Start several jobs of one stage as one array; one :class:`Launched` per job, in order."""


def runner_command(job_dir: Path) -> list[str]:
    """The command every backend runs, with the interpreter of the submitting process."""
    return [sys.executable, "-m", "rsna_tui.jobs.runner", str(job_dir)]
