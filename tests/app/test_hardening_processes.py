"""Nothing of a job outlives it, and crashes of launchers or other hosts never strand a job.

Real detached jobs of ``test-spawn`` (three children, one ignoring SIGTERM, one with a child of
its own) end in every way: return, exception, ``sys.exit``, SIGTERM, SIGKILL of the runner; after
each the job's process group must be empty. A scheduler is SIGKILLed while it launches a job.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rsna_tui.jobs import recovery
from rsna_tui.jobs.executor import runner_command
from rsna_tui.jobs.launches import read_launch
from rsna_tui.jobs.manager import JobManager
from rsna_tui.jobs.procgroup import members
from tests.app.conftest import REPO, events_of, wait_for


@pytest.fixture(autouse=True)
def _short_child_grace(monkeypatch: pytest.MonkeyPatch, job_env: dict[str, str]) -> None:
    """The stubborn child ignores SIGTERM; half a second before SIGKILL keeps the tests short."""
    monkeypatch.setenv("RSNA_TUI_CHILD_GRACE", "0.5")
    job_env["RSNA_TUI_CHILD_GRACE"] = "0.5"


def _spawned(cli, manager: JobManager, workspace: Path, *sets: str) -> tuple[dict, list[int]]:
    """Submit test-spawn; returns the job and the pids of its whole group once all are up."""
    job = json.loads(cli("run", "--stage", "test-spawn", *[a for s in sets for a in ("--set", s)], "--json").stdout)
    pgid = int(job["native_id"])
    children = workspace / "jobs" / str(job["id"]) / "children.txt"
    deadline = time.monotonic() + 20
    while not children.exists() or len(members(pgid)) < 5:  # runner, 3 children, 1 grandchild
        assert time.monotonic() < deadline, f"children did not start: {members(pgid)}"
        time.sleep(0.05)
    return job, [p.pid for p in members(pgid)]


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            continue
    return out


@pytest.mark.parametrize(("end", "status"), [("return", "succeeded"), ("raise", "failed"), ("exit", "failed")])
def test_a_job_that_ends_leaves_no_process_of_its_group(cli, manager: JobManager, workspace: Path, end: str, status: str) -> None:
    job, pids = _spawned(cli, manager, workspace, "seconds=1", f"end={end}")
    done = wait_for(manager, job["id"], lambda j: j.terminal)
    assert done.status == status, done
    if end == "raise":
        assert done.error == "RuntimeError: spawner asked to raise"
    assert members(int(job["native_id"])) == [] and _alive(pids) == []
    finished = events_of(workspace, job["id"])[-1]
    assert finished["type"] == "finished" and finished["ended_processes"] == 4  # the runner did it, before finished
    assert "processes of the job were still running" not in (done.message or "")  # nothing left for the manager
    assert "runner: ended 4 leftover processes" in (workspace / "jobs" / str(job["id"]) / "log.txt").read_text()


def test_sigterm_of_the_runner_alone_ends_its_group(cli, manager: JobManager, workspace: Path) -> None:
    job, pids = _spawned(cli, manager, workspace, "seconds=60")
    os.kill(int(job["native_id"]), signal.SIGTERM)  # the runner only: its children get nothing from us
    done = wait_for(manager, job["id"], lambda j: j.terminal)
    assert (done.status, done.exit_code, done.error) == ("cancelled", 143, "cancelled (SIGTERM)")
    assert _alive(pids) == [] and members(int(job["native_id"])) == []


def test_sigkill_of_the_runner_makes_it_lost_and_the_manager_kills_the_rest(cli, manager: JobManager, workspace: Path) -> None:
    job, pids = _spawned(cli, manager, workspace, "seconds=60")
    runner = int(job["native_id"])
    os.kill(runner, signal.SIGKILL)
    done = wait_for(manager, job["id"], lambda j: j.terminal)
    assert done.status == "lost" and "without a finished event" in done.error
    assert done.message.startswith("4 processes of the job were still running after it ended") and done.message.endswith("killed")
    assert _alive(pids) == [] and members(runner) == []


def test_a_finished_job_whose_group_is_not_empty_is_cleaned_up_and_says_so(cli, manager: JobManager, workspace: Path) -> None:
    job, pids = _spawned(cli, manager, workspace, "seconds=60")
    events = workspace / "jobs" / str(job["id"]) / "events.jsonl"
    with events.open("a") as handle:  # as if the runner had written finished and left everything running
        handle.write(json.dumps({"t": time.time(), "type": "finished", "status": "succeeded", "exit_code": 0}) + "\n")
    done = wait_for(manager, job["id"], lambda j: j.terminal)
    assert done.status == "succeeded"
    assert done.message.startswith("5 processes of the job were still running after it ended (pids ")
    assert _alive(pids) == []


def test_a_job_of_another_host_is_not_marked_lost(cli, manager: JobManager, workspace: Path) -> None:
    job = json.loads(cli("run", "--stage", "test-sleep", "--set", "seconds=60", "--json").stdout)
    wait_for(manager, job["id"], lambda j: j.status == "running")
    os.killpg(int(job["native_id"]), signal.SIGKILL)
    manager.store.update_job(job["id"], host="gpu-node-7")  # as seen from a login node sharing the folder
    for _ in range(3):
        manager.refresh()
        time.sleep(0.2)
    assert manager.job(job["id"]).status == "running"
    # a launch under way on that host: not requeued, not lost either
    queued = manager.submit("test-sleep", start=False)
    manager.store.update_job(queued.id, status="starting", started_at=time.time() - 3600)
    (workspace / "jobs" / str(queued.id) / "launch.json").write_text(json.dumps(
        {"pid": 1, "create_time": 0, "host": "gpu-node-7", "t": time.time() - 3600, "launches": 1}))
    manager.refresh()
    assert manager.job(queued.id).status == "starting"


def test_scheduler_killed_in_the_middle_of_a_launch_the_job_is_launched_again(
    manager: JobManager, workspace: Path, job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = manager.submit("test-sleep", overrides=["seconds=0.3"], start=False)
    log = workspace / "jobs" / str(job.id) / "log.txt"
    os.mkfifo(log)  # opening the log for the runner blocks: the scheduler stops mid-launch
    scheduler = subprocess.Popen([sys.executable, "-m", "rsna_tui.jobs.scheduler", str(workspace)], env=job_env,
                                 cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 20
    while manager.job(job.id).status != "starting":
        assert time.monotonic() < deadline and scheduler.poll() is None, "the scheduler never picked the job"
        time.sleep(0.05)
    assert read_launch(log.parent)["pid"] == scheduler.pid
    time.sleep(0.2)
    scheduler.kill()  # kill -9 while it is inside the launch
    scheduler.wait()
    log.unlink()
    picked = manager.job(job.id)
    assert (picked.status, picked.native_id) == ("starting", None)
    monkeypatch.setattr(recovery, "RELAUNCH_GRACE_S", 0.0)
    manager.refresh()  # sees the dead launcher and no runner: queued again, and launched at once
    again = manager.job(job.id)
    assert again.status in ("starting", "running") and again.native_id
    assert again.message == f"queued again: its launcher (pid {scheduler.pid} on {picked.host or os.uname().nodename}) died before starting it"
    done = wait_for(manager, job.id, lambda j: j.terminal)
    assert done.status == "succeeded"
    assert [e["type"] for e in events_of(workspace, job.id)].count("started") == 1
    assert read_launch(log.parent)["launches"] == 2


def test_a_runner_started_by_a_launcher_that_died_is_adopted_and_never_runs_twice(
    manager: JobManager, workspace: Path, job_env: dict[str, str]
) -> None:
    job = manager.submit("test-sleep", overrides=["seconds=6"], start=False)
    job_dir = workspace / "jobs" / str(job.id)
    manager.store.update_job(job.id, status="starting", started_at=time.time() - 60)
    (job_dir / "launch.json").write_text(json.dumps(
        {"pid": 999999, "create_time": 0, "host": os.uname().nodename, "t": time.time() - 60, "launches": 1}))
    first = subprocess.Popen(runner_command(job_dir), env=job_env, cwd=REPO, start_new_session=True)
    while not (job_dir / "events.jsonl").exists():
        time.sleep(0.05)
    second = subprocess.run(runner_command(job_dir), env=job_env, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert second.returncode == 3 and "this one exits" in second.stdout
    manager.refresh()
    adopted = manager.job(job.id)
    assert adopted.native_id == str(first.pid) and adopted.status == "running"
    done = wait_for(manager, job.id, lambda j: j.terminal)
    first.wait(timeout=10)
    assert done.status == "succeeded"
    assert [e["type"] for e in events_of(workspace, job.id)].count("started") == 1


def test_a_queued_job_whose_folder_is_gone_fails_alone(manager: JobManager, workspace: Path) -> None:
    gone = manager.submit("test-sleep", start=False)
    shutil.rmtree(workspace / "jobs" / str(gone.id))
    ok = manager.submit("test-sleep", overrides=["seconds=0.1"])  # schedules both: one bad job must not block the queue
    failed = manager.job(gone.id)
    assert failed.status == "failed" and failed.error.startswith("could not start: FileNotFoundError")
    assert wait_for(manager, ok.id, lambda j: j.terminal).status == "succeeded"
