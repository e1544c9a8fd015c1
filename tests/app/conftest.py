"""Fixtures for the application tests: a CLI runner in real subprocesses, and cleanup of jobs.

The test-only stages of ``tests/app/stages_for_tests.py`` are registered through
``RSNA_TUI_EXTRA_STAGES``; ``PYTHONPATH`` makes ``tests`` importable for the CLI and the runner.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

from rsna_tui.jobs.local import process_matches
from rsna_tui.jobs.manager import JobManager
from rsna_tui.jobs.store import JobRow, Store, StoreError
from rsna_tui.workspace import Workspace
from tests.app.review_job import review_job  # noqa: F401  (session fixture of the review tests)

REPO = Path(__file__).resolve().parents[2]
EXTRA = "tests.app.stages_for_tests:STAGES"


@pytest.fixture
def job_env(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment of CLI calls (and of in-process managers: the same variables are set here)."""
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "RSNA_TUI_EXTRA_STAGES": EXTRA,
        "RSNA_TUI_WORKSPACE": str(workspace),
        "RSNA_TUI_MONITOR_INTERVAL": "0.2",
        "RSNA_TUI_GPU_SLOTS": "1",
    })
    for key in ("RSNA_TUI_EXTRA_STAGES", "RSNA_TUI_WORKSPACE", "RSNA_TUI_MONITOR_INTERVAL", "RSNA_TUI_GPU_SLOTS"):
        monkeypatch.setenv(key, env[key])
    return env


@pytest.fixture
def cli(job_env: dict[str, str], workspace: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``rsna-tui ARGS`` in a subprocess (the real entry point), output captured."""

    def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "rsna_tui", *args], cwd=REPO, env=job_env, capture_output=True, text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"rsna-tui {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    return run


@pytest.fixture
def manager(workspace: Path, job_env: dict[str, str]) -> Any:
    """A job manager on the test workspace; at the end every job process group still there is killed."""
    mgr = JobManager(Workspace(workspace))
    yield mgr
    _kill_everything(workspace)
    mgr.close()


@pytest.fixture(autouse=True)
def _cleanup_jobs(workspace: Path) -> Any:
    yield
    _kill_everything(workspace)


def _kill_everything(workspace: Path) -> None:
    db = workspace / "jobs.db"
    if not db.exists():
        return
    try:
        store = Store(db)
    except StoreError:  # a test's damaged or refused database: no job of ours in it
        return
    with store:
        with store.write() as conn:
            conn.execute("UPDATE jobs SET status = 'cancelled' WHERE status = 'queued'")  # lets the scheduler exit
        for job in store.list_jobs():
            if not job.native_id or job.backend != "local":
                continue  # Slurm jobs: the cluster fixture of test_slurm cancels them
            pid = int(job.native_id)
            if psutil.pid_exists(pid) and not process_matches(pid, job.proc_create_time):
                continue  # the pid belongs to someone else now (or to this test process)
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def wait_for(manager: JobManager, job_id: int, predicate: Callable[[JobRow], bool], timeout: float = 30.0) -> JobRow:
    """Refresh until the job satisfies ``predicate``; fails with the job's record on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        manager.refresh()
        job = manager.job(job_id)
        if predicate(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for job {job_id}: {job}")
        time.sleep(0.1)


def events_of(workspace: Path, job_id: int) -> list[dict[str, Any]]:
    path = workspace / "jobs" / str(job_id) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]
