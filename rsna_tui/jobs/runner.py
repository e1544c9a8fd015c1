"""The job process: ``python -m rsna_tui.jobs.runner <job folder>``.

Reads ``spec.json``, turns ``job:<id>/<artefact>`` parameters into paths (``jobs.inputs``), runs the
stage function with a reporter that appends to ``events.jsonl``, samples resources in a thread, and
always ends with a ``finished`` event: ``succeeded`` (exit 0), ``failed`` (exit 1, the exception as
error, its traceback in ``log.txt``) or ``cancelled`` (SIGTERM, exit 143). It never opens ``jobs.db``.
Whatever backend starts it (local process group, Slurm) only has to run this command with
stdout/stderr going to ``log.txt``.

``started`` is written before the stage's module is imported (that can mean torch and nnU-Net,
seconds), so a job reads ``running`` right after launch.

Hardening:
- one runner per job folder, once: it holds an flock on ``runner.lock`` (with its pid) for its
  life, and a folder whose ``events.jsonl`` has events has run already, so a job relaunched after
  its launcher crashed never runs twice; a second runner exits (exit 3) without writing an event.
- nothing of the job outlives it: before ``finished`` the runner ends every other process of its
  process group (SIGTERM, SIGKILL after a grace), whatever the way the stage ended.
- a full disk still gets a ``finished`` event: a small reserve file is allocated at start and
  freed just before writing it, and the error says "disk full" (or "file size limit").
- files are created under the workspace's permission policy (private unless shared).
"""
from __future__ import annotations

import errno
import importlib
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import Any, Callable

import psutil

from engine.context import StageContext, WorkspaceLayout
from rsna_tui.jobs.events import EVENTS, EventReporter, EventWriter, read_spec
from rsna_tui.jobs.launches import RUNNER_LOCK, cancel_grace, cancel_requested, take_runner_lock
from rsna_tui.jobs.inputs import resolve_refs
from rsna_tui.jobs.monitor import ResourceMonitor
from rsna_tui.jobs.procgroup import end_group
from rsna_tui.workspace import Workspace

EXIT_FAILED = 1
EXIT_DUPLICATE = 3
EXIT_CANCELLED = 128 + signal.SIGTERM
#: Seconds the job's other processes get between SIGTERM and SIGKILL when the stage has ended.
CHILD_GRACE_S = 3.0
CHILD_GRACE_VAR = "RSNA_TUI_CHILD_GRACE"
#: On cancel the manager has sent SIGTERM to the whole group already and kills it after its own
#: grace (recorded in ``cancel.json``); the runner waits this share of it, so that it writes
#: ``finished`` before that.
CANCEL_GRACE_SHARE = 0.5
RESERVE = ".reserve"
RESERVE_BYTES = 256 * 1024


class Cancelled(BaseException):
    """Raised in the main thread by SIGTERM: the job is being cancelled."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough; the cleanup must not be interrupted
    raise Cancelled()


def _block_sigterm() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _unblock_sigterm() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _default_sigterm_in_child() -> None:
    """A forked child (nnU-Net's ``multiprocessing.Pool`` workers) dies on SIGTERM as its parent expects.

    With the job's handler inherited, ``Pool.terminate()`` made a worker raise Cancelled while it held
    the task queue's lock, and its siblings then waited on that lock forever: train2d's preprocessing
    hung in about one run of two. SIGTERM stays blocked from before the fork until the default is in
    place, so a worker terminated right after its start cannot run the job's handler either.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _unblock_sigterm()


def resolve_function(spec: dict[str, Any]) -> Callable[[dict[str, Any], StageContext], None]:
    """The spec's ``function`` (``module:attr``), else the stage table's entry for its stage."""
    ref = spec.get("function")
    if not ref:
        from engine.stages import get_stage

        ref = get_stage(spec["stage"]).function
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def stop_children(grace: float) -> list[int]:
    """End the job's other processes: its process group when it leads one, else its tree."""
    me = os.getpid()
    if os.getpgid(0) == me:  # the local backend's case: new session, the runner leads the group
        return end_group(me, grace, exclude=me)
    children = psutil.Process().children(recursive=True)  # e.g. under Slurm: the tree only
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    return [c.pid for c in children]


def reserve_space(job_dir: Path) -> Path | None:
    """Allocate a little disk that :func:`run_job` frees to write ``finished`` on a full disk."""
    path = job_dir / RESERVE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
    except OSError:
        path.unlink(missing_ok=True)
        return None
    return path


def failure_reason(exc: BaseException) -> str:
    """The job's error line; a full disk or file size limit says so first."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: {text}"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return f"file size limit reached (ulimit -f): {text}"
    return text


def _grace(job_dir: Path, status: str) -> float:
    """Seconds between SIGTERM and SIGKILL for the job's other processes when the stage has ended."""
    cancelled = cancel_grace(job_dir) if status == "cancelled" else None
    if cancelled is not None:
        return max(0.2, CANCEL_GRACE_SHARE * cancelled)
    try:
        return float(os.environ.get(CHILD_GRACE_VAR) or CHILD_GRACE_S)
    except ValueError:
        return CHILD_GRACE_S


def run_job(job_dir: Path) -> int:
    """Run the job of one folder; returns the process exit code."""
    lock = take_runner_lock(job_dir)
    if lock is None:
        print(f"runner {os.getpid()}: another runner holds {job_dir / RUNNER_LOCK}; this one exits", flush=True)
        return EXIT_DUPLICATE
    if (job_dir / EVENTS).exists() and (job_dir / EVENTS).stat().st_size > 0:
        lock.close()  # a job folder runs once; a retry or resume is a new job
        print(f"runner {os.getpid()}: {job_dir} has run already ({EVENTS} has events); this one exits", flush=True)
        return EXIT_DUPLICATE
    if cancel_requested(job_dir):  # cancelled while it was being launched
        lock.close()
        print(f"runner {os.getpid()}: {job_dir} was cancelled before it started; this one exits", flush=True)
        return EXIT_CANCELLED
    spec = read_spec(job_dir)
    workspace = Workspace(Path(spec.get("workspace") or job_dir.parent.parent))  # <workspace>/jobs/<id>
    workspace.apply_umask()
    reserve = reserve_space(job_dir)
    writer = EventWriter(job_dir / EVENTS)
    signal.signal(signal.SIGTERM, _on_sigterm)
    os.register_at_fork(before=_block_sigterm, after_in_parent=_unblock_sigterm,
                        after_in_child=_default_sigterm_in_child)
    status, code, error = "succeeded", 0, None
    monitor: ResourceMonitor | None = None
    try:
        writer.emit(
            "started", pid=os.getpid(), host=socket.gethostname(), attempt=spec.get("attempt", 1),
            resume=bool(spec.get("resume")), create_time=psutil.Process().create_time(),
        )
        monitor = ResourceMonitor(writer.emit_quietly)  # a sample lost to a full disk is no failure
        monitor.start()
        os.environ.update(workspace.job_environment())  # nnU-Net reads these at import time
        function = resolve_function(spec)
        ctx = StageContext(
            WorkspaceLayout(workspace.root), job_dir, EventReporter(writer),
            resume=bool(spec.get("resume")), job_id=str(spec["id"]), stage=str(spec.get("stage", "")),
            shard=spec.get("shard"),
        )
        params, notes = resolve_refs(dict(spec["params"]), ctx.workspace.jobs)  # upstream jobs' outputs
        for note in notes:
            ctx.reporter.log(note)
        function(params, ctx)
    except Cancelled:
        status, code, error = "cancelled", EXIT_CANCELLED, "cancelled (SIGTERM)"
    except SystemExit as exc:
        if exc.code not in (None, 0):
            status, code, error = "failed", EXIT_FAILED, f"stage exited with {exc.code}"
    except BaseException as exc:  # the job's record must say why, whatever it was
        _say(traceback.format_exc())
        status, code, error = "failed", EXIT_FAILED, failure_reason(exc)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if monitor is not None:
            monitor.stop()
        try:
            left = stop_children(_grace(job_dir, status))
        except Exception as exc:  # finished must be written whatever happens here
            _say(f"runner: could not end the job's other processes: {exc!r}")
            left = []
        if left:
            _say(f"runner: ended {len(left)} leftover processes of the job: {left}")
        if reserve is not None:
            reserve.unlink(missing_ok=True)
        writer.emit("finished", status=status, exit_code=code, error=error, ended_processes=len(left))
        writer.close()
        lock.close()
    return code


def _say(text: str) -> None:
    """A line in log.txt; a full disk must not stop the ``finished`` event."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is sys.stdout:
                print(text.rstrip("\n"), file=stream)
            stream.flush()
        except (OSError, ValueError):
            pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rsna_tui.jobs.runner <job folder>", file=sys.stderr)
        return 2
    return run_job(Path(args[0]).resolve())


if __name__ == "__main__":
    sys.exit(main())
