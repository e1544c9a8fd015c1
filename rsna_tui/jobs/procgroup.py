"""The processes of one job's process group, and ending them (SIGTERM, then SIGKILL).

A local job is a process group led by its runner (``start_new_session=True``). Its workers
(nnU-Net's augmentation and export processes) stay in that group even when their parent exits
and they are re-parented to PID 1, so the group, not the process tree, is what must be empty when
the job ends. Used by the runner (its own group, before it writes ``finished``) and by the manager
(a finished or lost job whose group still has members; a cancel).
"""
from __future__ import annotations

import os
import signal
import time

import psutil

POLL_S = 0.05


def members(pgid: int, exclude: int | None = None) -> list[psutil.Process]:
    """Live (not zombie) processes of group ``pgid``, except the process ``exclude``."""
    found = []
    for proc in psutil.process_iter(["status"]):
        if proc.pid == exclude or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(proc)
        except OSError:
            continue
    return found


def end_group(pgid: int, grace: float, exclude: int | None = None) -> list[int]:
    """SIGTERM every member of ``pgid`` (but ``exclude``), SIGKILL those left after ``grace`` s.

    Signals go to each member, not with ``killpg``, so that the runner can clean up its own group
    without signalling itself. Members that appear meanwhile (a worker forking) are caught by the
    loop. Returns the pids that were found running.
    """
    seen: list[int] = []
    termed: set[int] = set()
    deadline = time.monotonic() + grace
    while True:
        procs = members(pgid, exclude)
        if not procs:
            return seen
        forced = time.monotonic() >= deadline
        if forced and time.monotonic() >= deadline + 5.0:
            return seen  # unkillable (uninterruptible sleep): the caller reports what it saw
        for proc in procs:
            if proc.pid not in seen:
                seen.append(proc.pid)
            if forced or proc.pid not in termed:  # one TERM each: a second could restart its own grace
                try:
                    proc.send_signal(signal.SIGKILL if forced else signal.SIGTERM)
                except psutil.Error:
                    pass
                termed.add(proc.pid)
        time.sleep(POLL_S)
