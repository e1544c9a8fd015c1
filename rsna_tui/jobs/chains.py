"""Handing a job to a backend that waits for its dependencies itself (Slurm's ``afterok``).

The local backend starts a job only once its ``--after`` dependencies succeeded, so the job waits
in our queue (and the detached scheduler starts it). A backend that chains takes the job as soon as
every dependency has succeeded or has been handed to that same backend: a whole pipeline is then
submitted at once and runs in order without any process of ours watching.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rsna_tui.jobs.store import TERMINAL, JobRow

if TYPE_CHECKING:
    from rsna_tui.jobs.manager import JobManager

#: The detached scheduler stops watching a backend that has not answered for this long.
GIVE_UP_S = 600.0


def watching(manager: "JobManager") -> bool:
    """Whether some job runs on a backend that ends jobs by itself (Slurm) and so needs watching.

    A backend that has not answered for ``GIVE_UP_S`` is not watched any more (the next command
    that submits or refreshes starts the scheduler again).
    """
    now = time.time()
    chaining = [name for name, executor in manager.executors.items() if executor.chains
                and now - (getattr(executor, "failing_since", None) or now) < GIVE_UP_S]
    if not chaining:
        return False
    marks = ", ".join("?" for _ in chaining)
    return manager.store.conn.execute(
        f"SELECT 1 FROM jobs WHERE status IN ('queued', 'starting', 'running') AND native_id IS NOT NULL "
        f"AND backend IN ({marks}) LIMIT 1", chaining,
    ).fetchone() is not None


def chainable(manager: "JobManager", conn: Any, job: JobRow, picked: set[int]) -> bool:
    """Whether the job's backend can take it now; ``picked``: jobs launched in the same pass, before it."""
    if not manager.executors[job.backend].chains:
        return False
    for dep in job.depends_on:
        row = conn.execute("SELECT status, backend, native_id FROM jobs WHERE id = ?", (dep,)).fetchone()
        if row is None or row[0] == "succeeded":
            continue
        if row[1] != job.backend or not (dep in picked or (row[2] and row[0] not in TERMINAL)):
            return False
    return True


def native_dependencies(manager: "JobManager", job: JobRow) -> list[str]:
    """Native ids of the dependencies that have not succeeded yet, for ``start(after=...)``."""
    from rsna_tui.jobs.manager import JobError

    after = []
    for dep in job.depends_on:
        row = manager.store.get_job(dep)
        if row is None or row.status == "succeeded":
            continue
        if not row.native_id or row.terminal:
            raise JobError(f"dependency {dep} is {row.status} without a {job.backend} job to wait for")
        after.append(row.native_id)
    return after
