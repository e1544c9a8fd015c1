"""Bringing a launched job in step with what its backend says about it.

For a backend with a queue of its own (Slurm) the job manager hands this module all its
launched jobs of a refresh; they are asked about in one call (:meth:`QueueExecutor.states`) and each
answer settles one job: a job waiting in the backend's queue reads ``queued``, one it runs ``starting`` until
the runner reports; one that ended without a ``finished`` event gets the backend's verdict
(Slurm FAILED, TIMEOUT, NODE_FAIL, ...) or ``lost``. A job its backend ended for reasons of its own
(time limit, preemption, node failure) continues as a new linked attempt: resumed from its
checkpoint when its stage can resume, else run again.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from rsna_tui.jobs.events import LOG, tail
from rsna_tui.jobs.executor import Observed
from rsna_tui.jobs.fold import fold_job
from rsna_tui.jobs.stage_table import all_stages
from rsna_tui.jobs.store import JobRow

if TYPE_CHECKING:
    from rsna_tui.jobs.manager import JobManager

LOST_LOG_LINES = 10


def settle_all(manager: "JobManager", jobs: Sequence[JobRow]) -> None:
    """One state call per backend for all of ``jobs`` (launched there), then :func:`settle` each."""
    for backend in sorted({job.backend for job in jobs}):
        group = [job for job in jobs if job.backend == backend]
        executor = manager.executors[backend]
        try:
            seen = executor.states(group)  # type: ignore[attr-defined]
        except Exception as exc:  # a cluster that does not answer must not break `jobs`
            for job in group:
                _note(manager, job, f"{backend} state unknown: {exc}")
            continue
        for job in group:
            settle(manager, job, seen.get(job.id))


def settle(manager: "JobManager", job: JobRow, seen: Observed | None) -> None:
    """Bring one launched job in step with what its backend says (``seen``; None: no answer)."""
    if seen is None or seen.alive is None:
        return
    if not job.terminal:
        if seen.alive:
            if job.status == "queued" and not seen.waiting:
                manager.store.update_job(job.id, status="starting")
            if seen.waiting and seen.reason and job.message != seen.reason:
                _note(manager, job, seen.reason)
            return
        fold_job(manager.store, job.id, manager.job_dir(job))  # it may have finished just now
        current = manager.store.get_job(job.id)
        if current is None:
            return
        job = current
    if job.terminal:  # the runner said cancelled: its SIGTERM may have come from a time limit or a node failure
        if job.status == "cancelled" and seen.ended in ("failed", "lost") and \
                manager._finish(job.id, seen.ended, seen.reason, only_if=("cancelled",)):
            resubmit(manager, job, seen)
        return
    if seen.ended is not None:
        if manager._finish(job.id, seen.ended, _with_dependency(manager, job, seen.reason)):
            resubmit(manager, job, seen)
        return
    log_tail = tail(manager.job_dir(job) / LOG, LOST_LOG_LINES)
    reason = f"process {job.native_id} on {job.host} ended without a finished event"
    if seen.reason:
        reason = f"{job.backend} job {job.native_id} ended without a finished event ({seen.reason})"
    manager._finish(job.id, "lost", reason + (f"; last log lines:\n{log_tail}" if log_tail else "; log is empty"))


def _with_dependency(manager: "JobManager", job: JobRow, reason: str) -> str:
    """Slurm dropped the job because a dependency failed: say which, as the local queue does."""
    if "DependencyNeverSatisfied" not in reason:
        return reason
    for dep in job.depends_on:
        row = manager.store.get_job(dep)
        if row is not None and row.terminal and row.status != "succeeded":
            return f"dependency {dep} {row.status}" + (f": {row.error}" if row.error else "") + f" ({reason})"
    return reason


def _note(manager: "JobManager", job: JobRow, message: str) -> None:
    manager.store.update_job(job.id, message=message[:500])


def resubmit(manager: "JobManager", job: JobRow, seen: Observed) -> None:
    """A job its backend ended (time limit, preemption, node failure) continues as a new attempt.

    Resumable stages resume from their checkpoint (the epoch counter goes on); others run again
    after a node failure or preemption, not after a time limit (it would end the same way).
    """
    config = manager.config.slurm
    definition = all_stages().get(job.stage)
    resumable = definition is not None and definition.resumable
    if not seen.resubmit or not config.resubmit or job.attempt >= config.max_attempts:
        return
    if not resumable and seen.ended != "lost":
        return
    new = manager.resume(job.id) if resumable else manager.retry(job.id)
    with manager.store.write() as conn:
        conn.execute("UPDATE jobs SET error = error || ? WHERE id = ?",
                     (f"; {'resumed' if resumable else 'rerun'} as job {new.id}", job.id))
