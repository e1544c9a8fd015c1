"""Unusable databases get one clear line and stay untouched; workspace files are private by default.

Every fault is real: a garbage ``jobs.db``, a truncated one, one from a newer rsna-tui, one locked
by another process, one on a read-only file system (a tmpfs remounted read-only; needs root).
"""
from __future__ import annotations

import grp
import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rsna_tui.jobs.store import SCHEMA_VERSION, JobRow, Store
from tests.app.conftest import REPO


def _fingerprint(folder: Path) -> dict[str, tuple[str, float]]:
    """Every file of a folder: content hash and modification time."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _job_rows(db: Path, n: int) -> None:
    with Store(db) as store:
        for i in range(n):
            store.insert_job(JobRow(id=0, stage="test-sleep", profile="tiny", params={"i": i, "pad": "x" * 400},
                                    status="succeeded", created_at=time.time()))
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_garbage_database_one_line_exit_1_file_untouched(cli, workspace: Path, tmp_path: Path) -> None:
    db = workspace / "jobs.db"
    db.write_bytes(b"this is not SQLite at all\n" * 200)
    before = _fingerprint(workspace)
    _one_error_line(cli("jobs", check=False), f"{db} is damaged", "file is not a database", "rsna-tui doctor --repair")
    _one_error_line(cli("run", "--stage", "test-sleep", check=False), f"{db} is damaged")
    assert _fingerprint(workspace) == before
    other = tmp_path / "broken.db"
    other.write_bytes(os.urandom(8192))
    _one_error_line(cli("--db", str(other), "jobs", check=False), f"{other} is damaged")


def test_truncated_database_one_line_exit_1_file_untouched(cli, workspace: Path) -> None:
    db = workspace / "jobs.db"
    _job_rows(db, 300)
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])  # a copy cut short (disk full, interrupted transfer)
    before = _fingerprint(workspace)
    _one_error_line(cli("jobs", check=False), f"{db} is damaged", "malformed")
    assert _fingerprint(workspace) == before


def test_newer_database_is_refused_untouched(cli, workspace: Path) -> None:
    db = workspace / "jobs.db"
    _job_rows(db, 1)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 5,))
    conn.commit()
    conn.close()
    before = _fingerprint(workspace)
    _one_error_line(cli("jobs", check=False), f"{db} has schema version {SCHEMA_VERSION + 5}", "Upgrade rsna-tui")
    assert _fingerprint(workspace) == before


def test_locked_database_says_who_to_wait_for(cli, workspace: Path, job_env: dict[str, str]) -> None:
    db = workspace / "jobs.db"
    _job_rows(db, 1)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    try:
        job_env["RSNA_TUI_BUSY_TIMEOUT"] = "0.5"
        _one_error_line(cli("run", "--stage", "test-sleep", check=False), f"{db} is locked by another process", "fuser")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Store(db) as store:
        assert store.count_jobs() == 1  # the refused submit left nothing behind


@pytest.fixture
def tmpfs(tmp_path: Path) -> Path:
    """A small tmpfs of our own (root only: skipped elsewhere)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_database_on_a_read_only_file_system(cli, tmpfs: Path) -> None:
    root = tmpfs / "ws"
    db = root / "jobs.db"
    _job_rows(db, 2)
    before = _fingerprint(root)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    hint = f"is on a read-only file system (unable to open database file): read it with `rsna-tui --db {db} jobs`"
    _one_error_line(cli("--workspace", str(root), "run", "--stage", "test-sleep", check=False), f"{db} {hint}")
    _one_error_line(cli("--workspace", str(root), "jobs", check=False), f"{db} {hint}")
    listed = cli("--db", str(db), "jobs", "--json")  # what the message suggests works
    assert [j["id"] for j in json.loads(listed.stdout)] == [2, 1]
    assert _fingerprint(root) == before


# -- permissions ----------------------------------------------------------------------------------

def _run_job(workspace: Path, job_env: dict[str, str], umask: int, *options: str) -> subprocess.CompletedProcess[str]:
    # --force: every call is a new job, even right after an equal one (which the planner would reuse)
    result = subprocess.run(
        [sys.executable, "-m", "rsna_tui", "--workspace", str(workspace), *options, "run", "--stage", "test-predict",
         "--force", "--follow"], cwd=REPO, env=job_env, capture_output=True, text=True, timeout=60, umask=umask,
    )
    assert result.returncode == 0, result.stderr
    return result


def _modes(root: Path) -> dict[str, int]:
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root)) or ".": stat.S_IMODE(p.lstat().st_mode) for p in paths if not p.is_symlink()}


def test_workspace_is_private_with_the_usual_umask(workspace: Path, job_env: dict[str, str]) -> None:
    root = workspace / "new"  # created by the command itself
    _run_job(root, job_env, 0o022)
    modes = _modes(root)
    for name in ("jobs.db", "jobs/1/spec.json", "jobs/1/events.jsonl", "jobs/1/log.txt", "jobs/1/predictions.csv"):
        assert modes[name] == 0o600, (name, oct(modes[name]))
    for name in (".", "jobs", "jobs/1", "nnUNet_raw"):
        assert modes[name] == 0o700, (name, oct(modes[name]))
    assert {n: oct(m) for n, m in modes.items() if m & 0o077} == {}  # nothing for group or others


def test_a_umask_that_shuts_others_out_is_kept(workspace: Path, job_env: dict[str, str]) -> None:
    root = workspace / "group-readable"
    _run_job(root, job_env, 0o027)
    modes = _modes(root)
    assert modes["."] == 0o750 and modes["jobs/1"] == 0o750
    assert modes["jobs.db"] == 0o640 and modes["jobs/1/predictions.csv"] == 0o640
    assert {n: oct(m) for n, m in modes.items() if m & 0o007} == {}


def test_shared_group_workspace(workspace: Path, job_env: dict[str, str]) -> None:
    try:
        group = grp.getgrnam("users")
    except KeyError:
        pytest.skip("no 'users' group on this machine")
    root = workspace / "shared"
    _run_job(root, job_env, 0o022, "--shared-group", "users")
    _run_job(root, job_env, 0o022)  # later commands need no option: the root folder is the setting
    modes = _modes(root)
    assert modes["."] == 0o2770 and root.stat().st_gid == group.gr_gid
    for name in ("jobs.db", "jobs/2/predictions.csv", "jobs/2/events.jsonl"):
        assert modes[name] == 0o660, (name, oct(modes[name]))
        assert (root / name).stat().st_gid == group.gr_gid
    assert modes["jobs/2"] & 0o2770 == 0o2770
    assert {n: oct(m) for n, m in modes.items() if m & 0o007} == {}
    bad = subprocess.run([sys.executable, "-m", "rsna_tui", "--workspace", str(root), "--shared-group", "no-such-group-x",
                          "jobs"], cwd=REPO, env=job_env, capture_output=True, text=True, timeout=60)
    _one_error_line(bad, "no-such-group-x: no such group")
    assert json.loads((root / "jobs" / "1" / "spec.json").read_text())["stage"] == "test-predict"
