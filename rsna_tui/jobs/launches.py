"""Who launched a job and which runner holds it: the files that make a crashed launch recoverable.

Launching a job is two steps in two places: the launcher (a CLI command or the scheduler) marks it
``starting`` in ``jobs.db``, then starts the runner and records its pid. A launcher killed between
the two (SIGKILL, OOM, a closed laptop) leaves a ``starting`` job without a process id. Two small
files in the job folder tell the next refresh what happened:

- ``launch.json``, written in the same transaction that marks the job ``starting``: the
  launcher's pid, start time and host, and how many launches the job had. A dead launcher and no
  runner -> the job is queued again (at most :data:`MAX_LAUNCHES` times).
- ``runner.lock``, flock-ed by the runner for its whole life, with its pid: a live runner is
  adopted (its pid becomes the job's native id), and a second runner of the same folder (a
  relaunch racing a slow first start) exits without writing anything, so a job never runs twice.
- ``cancel.json``, written by a cancel before it signals: a job whose process then ends without
  a ``finished`` event (SIGTERM before the runner's handler was installed, SIGKILL after the
  grace) is ``cancelled``, not ``lost``, whichever manager notices first; a runner that starts
  after it exits at once, and a crashed launch is not queued again.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

import psutil

LAUNCH = "launch.json"
RUNNER_LOCK = "runner.lock"
CANCEL = "cancel.json"
#: A launcher that died this long ago without a runner showing up: the runner never started.
RELAUNCH_GRACE_S = 5.0
MAX_LAUNCHES = 3
#: How long a new runner retries its lock (a manager's probe holds it for microseconds).
LOCK_RETRY_S = 2.0


def record_launch(job_dir: Path) -> dict[str, Any]:
    """Write ``launch.json`` for a launch by this process; returns it."""
    from rsna_tui.jobs.events import write_json_atomic

    previous = read_launch(job_dir)
    record = {
        "pid": os.getpid(), "create_time": psutil.Process().create_time(), "host": socket.gethostname(),
        "t": time.time(), "launches": int(previous.get("launches", 0)) + 1 if previous else 1,
    }
    write_json_atomic(job_dir / LAUNCH, record)
    return record


def request_cancel(job_dir: Path, grace: float) -> None:
    """Record a cancel (and its SIGTERM -> SIGKILL grace) before the signals go out."""
    from rsna_tui.jobs.events import write_json_atomic

    try:
        write_json_atomic(job_dir / CANCEL, {"pid": os.getpid(), "host": socket.gethostname(), "t": time.time(),
                                             "grace": grace})
    except OSError:
        pass  # no folder or a full disk: the cancel goes on; a vanished process may then read lost


def cancel_requested(job_dir: Path) -> bool:
    return (job_dir / CANCEL).exists()


def cancel_grace(job_dir: Path) -> float | None:
    """The grace of a recorded cancel; None when there was none (a SIGTERM from someone else)."""
    try:
        return float(json.loads((job_dir / CANCEL).read_text())["grace"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_launch(job_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((job_dir / LAUNCH).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def take_runner_lock(job_dir: Path) -> IO[str] | None:
    """The runner's lock with its pid written in; None when another runner holds it."""
    handle = (job_dir / RUNNER_LOCK).open("a+")
    deadline = time.monotonic() + LOCK_RETRY_S
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                return None
            time.sleep(0.05)
    try:
        handle.truncate(0)
        handle.write(json.dumps({
            "pid": os.getpid(), "create_time": psutil.Process().create_time(), "host": socket.gethostname(),
        }))
        handle.flush()
    except OSError:
        pass  # a full disk: the lock still holds; managers just cannot adopt this runner by it
    return handle


def lock_holder(job_dir: Path) -> dict[str, Any] | None:
    """The pid / create_time / host of the runner holding the folder's lock, None when free."""
    path = job_dir / RUNNER_LOCK
    try:
        handle = path.open("r")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                data = json.loads(handle.read() or "{}")
            except ValueError:
                data = {}
            return data if isinstance(data, dict) and data.get("pid") else {"pid": None}
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def launcher_alive(launch: dict[str, Any]) -> bool | None:
    """Whether the launcher of ``launch.json`` still runs; None when it ran on another host."""
    from rsna_tui.jobs.local import process_matches

    if not launch:
        return False
    if launch.get("host") != socket.gethostname():
        return None
    return process_matches(int(launch["pid"]), launch.get("create_time"))
