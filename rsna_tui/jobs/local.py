"""The local backend: each job is a detached process group on this machine.

``start_new_session=True`` makes the runner the leader of its own session and process group, so
it survives the CLI, the TUI, the terminal and the SSH session, and a cancel can signal the whole
group (nnU-Net spawns worker processes: signalling one pid is not enough). The runner's pid is
the job's native id; its start time guards against a reused pid.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

from rsna_tui.jobs.events import LOG
from rsna_tui.jobs.executor import Launched, runner_command
from rsna_tui.jobs.procgroup import end_group, members
from rsna_tui.jobs.store import JobRow

#: Two start times within this many seconds are the same process (psutil rounds them).
CREATE_TIME_TOLERANCE_S = 0.05
POLL_S = 0.05
#: How long an ended job's runner may take to exit (it wrote ``finished``) before it is killed.
LEADER_EXIT_S = 3.0
SWEEP_GRACE_S = 1.0


def process_matches(pid: int, create_time: float | None) -> bool:
    """Whether ``pid`` is alive, not a zombie, and the process that started at ``create_time``."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < CREATE_TIME_TOLERANCE_S
    except psutil.Error:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is left (zombies of our own children are reaped first)."""
    _reap()
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    members = [p for p in psutil.process_iter(["status"]) if _pgid(p.pid) == pgid]
    return any(p.info["status"] != psutil.STATUS_ZOMBIE for p in members)


def group_is_ours(pgid: int, create_time: float | None) -> bool:
    """Whether group ``pgid`` can still be the job's: its leader is ours, a zombie or gone.

    A pid is not reused while a process group of that number has members, so a live leader of
    another start time means our group is empty and the number belongs to someone else. A live
    leader whose start time we never knew cannot be told apart: not ours, to be safe.
    """
    try:
        proc = psutil.Process(pgid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        return create_time is not None and abs(proc.create_time() - create_time) < CREATE_TIME_TOLERANCE_S
    except psutil.Error:
        return True


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


#: Runner processes this process started, so that it can collect them when they exit.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap() -> None:
    """Collect our exited runners so that they do not linger as zombies (a long-lived TUI)."""
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


class LocalExecutor:
    """Runs jobs as detached process groups of this host."""

    name = "local"
    chains = False

    def __init__(self) -> None:
        self.host = socket.gethostname()

    def start(self, job_dir: Path, env: dict[str, str], cwd: Path) -> Launched:
        with (job_dir / LOG).open("ab") as log:
            proc = subprocess.Popen(
                runner_command(job_dir), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )
        _CHILDREN[proc.pid] = proc
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:  # already gone: is_alive will say so, the log says why
            create_time = None
        return Launched(str(proc.pid), self.host, create_time)

    def is_alive(self, job: JobRow) -> bool | None:
        if job.host != self.host:
            return None
        if not job.native_id:
            return False
        _reap()
        return process_matches(int(job.native_id), job.proc_create_time)

    def sweep(self, job: JobRow) -> list[int]:
        """After a job ended: wait for its runner to exit, then kill anything left of its group.

        Returns the pids that had to be killed (empty in the normal case: the runner ends its
        group before writing ``finished``). The processes of a ``lost`` job lost their runner
        already: they get SIGKILL at once, so that no window is left in which this process (a
        scheduler, say) could be killed between SIGTERM and SIGKILL and leave them running.
        """
        if job.host != self.host or not job.native_id:
            return []
        pgid = int(job.native_id)
        deadline = time.monotonic() + LEADER_EXIT_S
        while time.monotonic() < deadline and process_matches(pgid, job.proc_create_time):
            _reap()
            time.sleep(POLL_S)
        _reap()
        if not group_is_ours(pgid, job.proc_create_time) or not members(pgid):
            return []
        return end_group(pgid, 0.0 if job.status == "lost" else SWEEP_GRACE_S)

    def cancel(self, job: JobRow, grace: float) -> bool:
        """SIGTERM to the job's process group, SIGKILL after ``grace`` seconds."""
        if job.host != self.host or not job.native_id:
            return False
        pgid = int(job.native_id)
        try:
            leader = psutil.Process(pgid)
            if job.proc_create_time is not None and abs(leader.create_time() - job.proc_create_time) >= CREATE_TIME_TOLERANCE_S:
                return True  # the pid now belongs to someone else: our job is long gone
        except psutil.Error:
            pass  # leader gone; its group (children) may remain and cannot share the id with others
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not group_alive(pgid):
                    return True
                time.sleep(POLL_S)
        return not group_alive(pgid)
