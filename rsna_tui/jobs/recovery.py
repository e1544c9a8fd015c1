"""Recovering from crashes around a job's process: adoption, relaunch, vanished jobs, leftovers.

What the job manager's refresh does when a job's process is not where the database says:
- a ``starting`` job without a pid: a runner holding the folder's lock is adopted; a launcher
  that died before starting one means the job is queued again (see :mod:`rsna_tui.jobs.launches`);
  a launch on another host is left to that host;
- a process gone without ``finished``: ``lost`` with the log tail, or ``cancelled`` when a cancel
  asked for it;
- an ended local job: whatever is left of its process group is killed, and its message says so.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rsna_tui.jobs.fold import fold_job
from rsna_tui.jobs.launches import (
    MAX_LAUNCHES, RELAUNCH_GRACE_S, cancel_requested, launcher_alive, lock_holder, read_launch,
)
from rsna_tui.jobs.store import JobRow

if TYPE_CHECKING:
    from rsna_tui.jobs.manager import JobManager

#: A live launcher may take this long between picking a job and starting its runner.
LAUNCH_TIMEOUT_S = 60.0


def vanished(manager: JobManager, job: JobRow, reason: str) -> None:
    """The job's process is gone without ``finished``: ``lost``, or ``cancelled`` if it was asked to stop."""
    if cancel_requested(manager.job_dir(job)):
        manager._finish(job.id, "cancelled", "cancelled; its process ended before writing finished")
    else:
        manager._finish(job.id, "lost", reason)


def adopt(manager: JobManager, job: JobRow, replace: bool = False) -> bool:
    """Take the pid of the runner holding the job folder's lock as the job's native id.

    A launcher killed after starting the runner never recorded its pid; a relaunched job's
    own runner exits when a slow first one holds the lock (``replace``: adopt that one).
    """
    if job.backend != "local":
        return False
    holder = lock_holder(manager.job_dir(job))
    if not holder or not holder.get("pid") or (replace and str(holder["pid"]) == job.native_id):
        return False
    with manager.store.write() as conn:
        cursor = conn.execute(
            "UPDATE jobs SET native_id = ?, host = ?, proc_create_time = ? WHERE id = ? AND status IN "
            "('starting', 'running') AND (native_id IS NULL OR ?)",
            (str(holder["pid"]), holder.get("host"), holder.get("create_time"), job.id, replace),
        )
    return cursor.rowcount > 0


def check_launch(manager: JobManager, job: JobRow) -> bool:
    """A job picked for launch with no runner: wait for a live launcher, else launch it again."""
    if job.status == "running":  # its runner started, never recorded its pid, holds no lock now
        return _lost_unrecorded(manager, job)
    job_dir = manager.job_dir(job)
    launch = read_launch(job_dir)
    alive = launcher_alive(launch)
    if alive is None:
        return False  # launched from another host: a manager there decides
    since = float(launch.get("t") or job.started_at or job.created_at)
    if alive and time.time() - since < LAUNCH_TIMEOUT_S:
        return False
    if time.time() - since < RELAUNCH_GRACE_S:
        return False  # a runner started just before its launcher died may still be starting
    launcher = f"its launcher (pid {launch.get('pid')} on {launch.get('host')})" if launch else "its launcher"
    if cancel_requested(job_dir):
        manager._finish(job.id, "cancelled", f"cancelled before it started ({launcher} died)")
        return False
    if int(launch.get("launches", 1)) >= MAX_LAUNCHES:
        manager._finish(job.id, "failed", f"never started: {launcher} died before starting it, {MAX_LAUNCHES} times")
        return False
    with manager.store.write() as conn:
        cursor = conn.execute(
            "UPDATE jobs SET status = 'queued', started_at = NULL, gpu_slot = NULL, message = ? "
            "WHERE id = ? AND status = 'starting' AND native_id IS NULL",
            (f"queued again: {launcher} {'died' if not alive else 'hung'} before starting it", job.id),
        )
    return cursor.rowcount > 0


def _lost_unrecorded(manager: JobManager, job: JobRow) -> bool:
    if job.host and job.host != manager.executors["local"].host:
        return False
    fold_job(manager.store, job.id, manager.job_dir(job))
    current = manager.store.get_job(job.id)
    if current is not None and not current.terminal and not adopt(manager, current):
        vanished(manager, job, "its runner ended without a finished event (its launcher died before recording its pid)")
    return False


def sweep(manager: JobManager, job: JobRow) -> None:
    """Kill what is left of an ended local job's process group and say so in its message."""
    executor_sweep = getattr(manager.executors.get(job.backend), "sweep", None)  # the local backend's
    if executor_sweep is None:
        return
    left = executor_sweep(job)
    if left:
        note = f"{len(left)} processes of the job were still running after it ended (pids {', '.join(map(str, left))}); killed"
        manager.store.update_job(job.id, message=note)
