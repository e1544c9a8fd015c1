"""A full disk during a job: the job fails saying so, earlier outputs stay, the store stays consistent.

Two real ways: ``RLIMIT_FSIZE`` on the job (``ulimit -f``: EFBIG on the output), and a workspace on
a small tmpfs (ENOSPC on the output, the events and the log; needs root, skipped elsewhere).
"""
from __future__ import annotations

import json
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rsna_tui.jobs.manager import JobManager
from rsna_tui.jobs.store import Store, StoreError
from rsna_tui.workspace import Workspace
from tests.app.conftest import REPO


def _consistent(workspace: Path, job_id: int) -> None:
    """Integrity ok, every complete event folded exactly once, the whole file consumed."""
    events_file = workspace / "jobs" / str(job_id) / "events.jsonl"
    conn = sqlite3.connect(workspace / "jobs.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    folded = conn.execute("SELECT COUNT(*) FROM metrics WHERE job_id = ?", (job_id,)).fetchone()[0]
    offset = conn.execute("SELECT events_offset FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    conn.close()
    written = 0
    for line in events_file.read_bytes().splitlines():
        try:
            written += json.loads(line).get("type") == "metric"
        except ValueError:
            continue  # a line the full disk cut short
    assert folded == written > 0
    assert offset == events_file.stat().st_size


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_file_size_limit_fails_the_job_with_that_reason(workspace: Path, job_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rsna_tui", "run", "--stage", "test-fill", "--set", "mib=8", "--follow"],
        cwd=REPO, env=job_env, capture_output=True, text=True, timeout=60, preexec_fn=_limit_file_size(3 * 2**20),
    )
    assert result.returncode == 1, result.stderr
    assert "[1 test-fill] failed: file size limit reached (ulimit -f): OSError: [Errno 27] File too large" in result.stdout
    outputs = workspace / "jobs" / "1" / "outputs"
    assert (outputs / "first.bin").read_bytes() == b"1" * 4096  # earlier output intact
    assert sorted(p.name for p in outputs.iterdir()) == ["first.bin"]  # no half-written second output
    with Store(workspace / "jobs.db") as store:
        job = store.get_job(1)
        assert (job.status, job.exit_code) == ("failed", 1)
        assert store.metric_series(1, "written_mib") == [(0, 1.0), (1, 2.0), (2, 3.0)]  # 3 MiB fit
    _consistent(workspace, 1)


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_while_writing_events_and_outputs(small_disk: Path, job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = small_disk / "ws"
    monkeypatch.setenv("RSNA_TUI_WORKSPACE", str(root))
    manager = JobManager(Workspace(root))
    try:
        job = manager.submit("test-fill", overrides=["mib=64", "events=true"])
        deadline = time.monotonic() + 60
        errors = []
        while True:  # while the disk is full, folding may be refused: that is a clear error, not damage
            try:
                manager.refresh()
                if manager.job(job.id).terminal:
                    break
            except StoreError as exc:
                errors.append(str(exc))
            assert time.monotonic() < deadline, "the job never ended"
            time.sleep(0.1)
        done = manager.job(job.id)
        assert done.status == "failed" and done.error.startswith("disk full: OSError: [Errno 28] No space left on device"), done
        assert all("the disk is full" in e for e in errors), errors
        assert (root / "jobs" / str(job.id) / "outputs" / "first.bin").read_bytes() == b"1" * 4096
        assert not (root / "jobs" / str(job.id) / "outputs" / ".second.bin.tmp").exists()
        assert events_of_lenient(root, job.id)[-1]["type"] == "finished"
        _consistent(root, job.id)
        again = manager.submit("test-sleep", overrides=["seconds=0.1"])  # the workspace still works
        while not manager.job(again.id).terminal:
            manager.refresh()
            time.sleep(0.1)
        assert manager.job(again.id).status == "succeeded"
    finally:
        from tests.app.conftest import _kill_everything

        _kill_everything(root)
        manager.close()


def events_of_lenient(workspace: Path, job_id: int) -> list[dict]:
    """The readable events (a full disk may have cut one line short)."""
    out = []
    for line in (workspace / "jobs" / str(job_id) / "events.jsonl").read_bytes().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


