"""The job process: ``python -m rsna_tui.jobs.runner <job folder>``.

Reads ``spec.json``, runs the stage function with a reporter that appends to ``events.jsonl``,
samples resources in a thread, and always ends with a ``finished`` event: ``succeeded`` (exit 0),
``failed`` (exit 1, the exception as error, its traceback in ``log.txt``) or ``cancelled``
(SIGTERM, exit 143). It never opens ``jobs.db``. Whatever backend starts it (local process group,
Slurm) only has to run this command with stdout/stderr going to ``log.txt``.

``started`` is written before the stage's module is imported (that can mean torch and nnU-Net,
seconds), so a job reads ``running`` right after launch.
"""
from __future__ import annotations

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
from rsna_tui.jobs.monitor import ResourceMonitor
from rsna_tui.workspace import Workspace

EXIT_FAILED = 1
EXIT_CANCELLED = 128 + signal.SIGTERM
CHILD_GRACE_S = 3.0


class Cancelled(BaseException):
    """Raised in the main thread by SIGTERM: the job is being cancelled."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough; the cleanup must not be interrupted
    raise Cancelled()


def resolve_function(spec: dict[str, Any]) -> Callable[[dict[str, Any], StageContext], None]:
    """The spec's ``function`` (``module:attr``), else the stage table's entry for its stage."""
    ref = spec.get("function")
    if not ref:
        from engine.stages import get_stage

        ref = get_stage(spec["stage"]).function
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def stop_children(grace: float = CHILD_GRACE_S) -> None:
    """SIGTERM the stage's child processes, SIGKILL those still alive after ``grace`` seconds."""
    children = psutil.Process().children(recursive=True)
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


def run_job(job_dir: Path) -> int:
    """Run the job of one folder; returns the process exit code."""
    spec = read_spec(job_dir)
    writer = EventWriter(job_dir / EVENTS)
    signal.signal(signal.SIGTERM, _on_sigterm)
    status, code, error = "succeeded", 0, None
    monitor: ResourceMonitor | None = None
    try:
        writer.emit(
            "started", pid=os.getpid(), host=socket.gethostname(), attempt=spec.get("attempt", 1),
            resume=bool(spec.get("resume")),
        )
        monitor = ResourceMonitor(writer.emit)
        monitor.start()
        workspace = Workspace(Path(spec["workspace"]))
        os.environ.update(workspace.job_environment())  # nnU-Net reads these at import time
        function = resolve_function(spec)
        ctx = StageContext(
            WorkspaceLayout(workspace.root), job_dir, EventReporter(writer),
            resume=bool(spec.get("resume")), job_id=str(spec["id"]), stage=str(spec.get("stage", "")),
        )
        function(dict(spec["params"]), ctx)
    except Cancelled:
        status, code, error = "cancelled", EXIT_CANCELLED, "cancelled (SIGTERM)"
    except SystemExit as exc:
        if exc.code not in (None, 0):
            status, code, error = "failed", EXIT_FAILED, f"stage exited with {exc.code}"
    except BaseException as exc:  # the job's record must say why, whatever it was
        traceback.print_exc()
        status, code, error = "failed", EXIT_FAILED, f"{type(exc).__name__}: {exc}"
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if monitor is not None:
            monitor.stop()
        sys.stdout.flush()
        sys.stderr.flush()
        writer.emit("finished", status=status, exit_code=code, error=error)
        writer.close()
    if status == "cancelled":
        stop_children()
    return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rsna_tui.jobs.runner <job folder>", file=sys.stderr)
        return 2
    return run_job(Path(args[0]).resolve())


if __name__ == "__main__":
    sys.exit(main())
