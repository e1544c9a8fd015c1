"""The detached scheduler: ``python -m rsna_tui.jobs.scheduler <workspace>``.

Queued jobs (waiting for a dependency or a GPU slot) must start even when no CLI or TUI stays
open. Whoever submits a job that has to wait starts this process; at most one per workspace runs
(it holds an flock on ``scheduler.lock``). It folds events, notices ended jobs, starts ready ones,
and exits as soon as nothing is queued and no job runs on a backend that needs watching: Slurm jobs
are asked about every ``slurm.poll_seconds`` so that one ended by its time limit or a node failure
is continued as its next attempt while nobody has the CLI or the TUI open.

Exit without losing a job: the scheduler drops the lock *before* its final look at the queue. A job
queued after that look was queued after the lock was free, so its submitter starts a new scheduler.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from typing import IO

from rsna_tui.jobs.chains import watching
from rsna_tui.jobs.manager import JobManager
from rsna_tui.workspace import Workspace

POLL_S = 0.5


def _try_lock(handle: IO[str]) -> bool:
    """Take the workspace's scheduler lock and write our pid in it (``rsna-tui doctor`` shows it)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return True


def serve(root: Path, poll: float = POLL_S) -> int:
    """Run until the queue is empty; returns at once when another scheduler holds the lock."""
    workspace = Workspace(root)
    workspace.ensure_root()
    with workspace.scheduler_lock.open("a") as handle:
        if not _try_lock(handle):
            return 0
        manager = JobManager(workspace)
        try:
            while workspace.db_path.exists():  # a deleted workspace has nothing left to watch
                manager.refresh()
                if manager.schedule() > 0:
                    time.sleep(poll)
                    continue
                if watching(manager):
                    time.sleep(max(poll, manager.config.slurm.poll_seconds))
                    continue
                fcntl.flock(handle, fcntl.LOCK_UN)
                if not (manager.waiting_to_launch() or watching(manager)) or not _try_lock(handle):
                    return 0
            return 0
        finally:
            manager.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rsna_tui.jobs.scheduler <workspace>", file=sys.stderr)
        return 2
    return serve(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
