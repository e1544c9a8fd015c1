"""What a backend must do for the job manager; the local process backend is the first one.

A backend starts ``python -m rsna_tui.jobs.runner <job folder>`` somewhere with stdout/stderr in
``log.txt``, tells whether it still runs, and cancels it. Everything else (events, folding,
queueing, retries) is backend-independent, so a Slurm backend (``sbatch`` / ``squeue`` /
``scancel``) adds one class implementing :class:`Executor`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rsna_tui.jobs.store import JobRow


@dataclass(frozen=True)
class Launched:
    """What the backend knows about a started job."""

    native_id: str
    host: str
    create_time: float | None = None


class Executor(Protocol):
    """A way of running job processes."""

    name: str

    def start(self, job_dir: Path, env: dict[str, str], cwd: Path) -> Launched:
        """Start the runner on ``job_dir`` detached from the caller."""

    def is_alive(self, job: JobRow) -> bool | None:
        """Whether the job's process still runs; None when this process cannot tell (another host)."""

    def cancel(self, job: JobRow, grace: float) -> bool:
        """Stop the job and all its processes (polite first, forced after ``grace`` seconds).

        Returns True when nothing of the job is left running.
        """


def runner_command(job_dir: Path) -> list[str]:
    """The command every backend runs, with the interpreter of the submitting process."""
    return [sys.executable, "-m", "rsna_tui.jobs.runner", str(job_dir)]
