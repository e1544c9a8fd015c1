"""``rsna-tui doctor``: real damaged databases, lost rows and folders, a dead queue, leftover processes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from rsna_tui.jobs.manager import JobManager
from rsna_tui.jobs.procgroup import members
from tests.app.conftest import wait_for


def _doctor(cli, *args: str) -> tuple[int, list[dict]]:
    result = cli("doctor", "--json", *args, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def _finding(findings: list[dict], check: str) -> list[dict]:
    return [f for f in findings if f["check"] == check]


def _picture(manager: JobManager) -> dict:
    """What a user sees of every job: record, metric curves, artefacts, case predictions."""
    out = {}
    for job in manager.store.list_jobs():
        out[job.id] = {
            "row": {k: getattr(job, k) for k in ("stage", "profile", "params", "status", "exit_code", "error", "attempt",
                                                   "parent_id", "depends_on", "started_at", "finished_at", "events_offset")},
            "loss": manager.store.metric_series(job.id, "loss"),
            "artefacts": manager.store.artefacts(job.id),
            "cases": manager.store.case_predictions(job.id),
        }
    return out


def test_a_damaged_database_is_rebuilt_from_the_job_folders(cli, manager: JobManager, workspace: Path) -> None:
    ok = cli("run", "--stage", "test-sleep", "--set", "steps=3", "--follow")
    assert ok.returncode == 0
    cli("run", "--stage", "test-sleep", "--set", "fail=true", "--follow", check=False)
    cli("run", "--stage", "test-predict", "--follow")
    cli("retry", "2")
    wait_for(manager, 4, lambda j: j.terminal)
    running = wait_for(manager, manager.submit("test-sleep", overrides=["seconds=60"]).id, lambda j: j.status == "running")
    before = _picture(manager)
    assert [before[i]["row"]["status"] for i in (1, 2, 3, 4)] == ["succeeded", "failed", "succeeded", "failed"]
    manager.close()

    db = workspace / "jobs.db"
    garbage = b"\x00garbage" * 4096
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(garbage)
    code, findings = _doctor(cli)
    assert code == 1 and _finding(findings, "database")[0]["message"] == f"{db} is damaged (file is not a database)"
    assert db.read_bytes() == garbage  # checking changes nothing
    code, findings = _doctor(cli, "--repair")
    database = _finding(findings, "database")[0]
    assert code == 0 and database["repaired"] and "rebuilt 5 jobs from their folders" in database["repair"]
    kept = [p for p in workspace.iterdir() if p.name.startswith("jobs.db.damaged-")]
    assert len(kept) == 1 and kept[0].read_bytes() == garbage  # set aside, never deleted

    rebuilt = JobManager(manager.workspace)
    try:
        after = _picture(rebuilt)
        for job_id in (1, 2, 3, 4):
            assert after[job_id] == before[job_id], job_id
        assert after[3]["cases"] and after[1]["loss"] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
        still = rebuilt.job(running.id)
        assert (still.status, still.native_id, still.host) == ("running", running.native_id, running.host)
        assert psutil.Process(int(still.native_id)).is_running()
        os.killpg(int(still.native_id), signal.SIGKILL)  # the rebuilt row watches the real process
        lost = wait_for(rebuilt, running.id, lambda j: j.terminal)
        assert lost.status == "lost"
        again = rebuilt.submit("test-sleep", overrides=["seconds=0.1"])
        assert again.id == running.id + 1  # ids go on after the rebuilt ones
    finally:
        rebuilt.close()


def test_folders_without_rows_and_rows_without_folders(cli, manager: JobManager, workspace: Path) -> None:
    cli("run", "--stage", "test-sleep", "--follow")
    cli("run", "--stage", "test-sleep", "--follow", "--force")  # an equal job succeeded: --force runs it again
    orphan = manager.submit("test-sleep", start=False)
    with manager.store.write() as conn:  # job 2's row is gone (a restored backup, a bad edit)
        conn.execute("DELETE FROM metrics WHERE job_id = 2")
        conn.execute("DELETE FROM resource_samples WHERE job_id = 2")
        conn.execute("DELETE FROM artefacts WHERE job_id = 2")
        conn.execute("DELETE FROM jobs WHERE id = 2")
    shutil.rmtree(workspace / "jobs" / str(orphan.id))  # a queued job whose folder was deleted
    code, findings = _doctor(cli)
    messages = [f["message"] for f in _finding(findings, "folders")]
    assert code == 1
    assert f"job folder {workspace / 'jobs' / '2'} has events but no row in the database" in messages
    assert f"job {orphan.id} is queued but its folder {workspace / 'jobs' / str(orphan.id)} is missing" in messages
    code, findings = _doctor(cli, "--repair")
    assert code == 0 and all(f["repaired"] for f in _finding(findings, "folders") if f["level"] == "problem")
    assert manager.job(2).status == "succeeded" and manager.store.metric_series(2, "loss") == [(0, 1.0), (1, 0.5)]
    gone = manager.job(orphan.id)
    assert gone.status == "lost" and "folder is missing" in gone.error


def test_queued_jobs_without_a_scheduler_are_started(cli, manager: JobManager) -> None:
    job = manager.submit("test-sleep", overrides=["seconds=0.1"], start=False)  # its submitter died before scheduling
    code, findings = _doctor(cli)
    assert code == 1 and _finding(findings, "scheduler")[0]["message"] == "1 jobs are queued but no scheduler runs (it was killed?)"
    code, findings = _doctor(cli, "--repair")
    assert code == 0
    assert wait_for(manager, job.id, lambda j: j.terminal).status == "succeeded"


def test_a_crashed_launch_is_queued_again(cli, manager: JobManager, workspace: Path) -> None:
    job = manager.submit("test-sleep", overrides=["seconds=0.1"], start=False)
    dead = subprocess.Popen(["true"])
    dead.wait()
    manager.store.update_job(job.id, status="starting", started_at=time.time() - 30)
    (workspace / "jobs" / str(job.id) / "launch.json").write_text(json.dumps(
        {"pid": dead.pid, "create_time": 0, "host": os.uname().nodename, "t": time.time() - 30, "launches": 1}))
    code, findings = _doctor(cli)
    assert code == 1 and "their launcher died before starting them" in _finding(findings, "launches")[0]["message"]
    assert manager.job(job.id).status == "starting"
    code, _ = _doctor(cli, "--repair")
    assert code == 0
    done = wait_for(manager, job.id, lambda j: j.terminal)
    assert done.status == "succeeded" and done.message.startswith("CUDA_VISIBLE_DEVICES")


def test_processes_left_by_an_ended_job_are_killed(cli, manager: JobManager, workspace: Path, job_env: dict) -> None:
    job = json.loads(cli("run", "--stage", "test-spawn", "--json").stdout)
    pgid = int(job["native_id"])
    deadline = time.monotonic() + 20
    while len(members(pgid)) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with manager.store.write() as conn:  # recorded as ended by a manager that did not clean up
        conn.execute("UPDATE jobs SET status = 'failed', error = 'marked by hand' WHERE id = ?", (job["id"],))
    code, findings = _doctor(cli)
    assert code == 1 and _finding(findings, "processes")[0]["message"].startswith(f"job {job['id']} is failed but 5 of its processes still run")
    code, findings = _doctor(cli, "--repair")
    assert code == 0 and members(pgid) == []
    assert manager.job(job["id"]).message == "rsna-tui doctor killed 5 processes left running after it ended"


def test_a_workspace_open_to_others_and_a_nearly_full_disk(cli, workspace: Path, tmp_path: Path) -> None:
    os.chmod(workspace, 0o755)
    code, findings = _doctor(cli)
    assert code == 1 and _finding(findings, "permissions")[0]["message"] == f"{workspace} is open to other users (mode 755)"
    code, findings = _doctor(cli, "--repair")
    assert code == 0 and (workspace.stat().st_mode & 0o777) == 0o700
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=700", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = cli("--workspace", str(mount), "doctor", "--json", check=False)
        disk = _finding(json.loads(result.stdout), "disk")[0]
        assert result.returncode == 1 and disk["level"] == "problem" and disk["message"].endswith("MiB free of 4 MiB on the workspace's file system")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
