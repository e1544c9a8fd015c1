"""Jobs as real detached processes: survival, loss, cancel, queueing, resources, retry/resume.

Launched through the real CLI (``python -m rsna_tui``) where the behaviour is the CLI's promise,
watched through an in-process manager (faster than a CLI call per poll) elsewhere.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from rsna_tui.jobs.gpus import nvml_device_count
from rsna_tui.jobs.manager import JobManager, _lock_held
from tests.app.conftest import REPO, events_of, wait_for


def _submit(cli, *args: str) -> dict:
    return json.loads(cli("run", *args, "--json").stdout)


def test_job_outlives_the_cli_that_launched_it(cli, manager: JobManager, workspace: Path) -> None:
    job = _submit(cli, "--stage", "test-sleep", "--set", "seconds=1.5", "--set", "steps=3")
    assert job["status"] in ("starting", "running")  # the CLI has exited; the job has not
    pid = int(job["native_id"])
    assert os.getpgid(pid) == pid and os.getsid(pid) != os.getsid(0), "not in its own session / group"
    running = wait_for(manager, job["id"], lambda j: j.status != "starting", timeout=10)
    assert running.status in ("running", "succeeded") and running.started_at is not None
    done = wait_for(manager, job["id"], lambda j: j.terminal)
    assert done.status == "succeeded" and done.exit_code == 0
    assert manager.store.metric_series(job["id"], "loss") == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert manager.store.artefacts(job["id"]) == {"marker": str(workspace / "jobs" / str(job["id"]) / "marker.txt")}
    log = (workspace / "jobs" / str(job["id"]) / "log.txt").read_text()
    assert f"slept 1.5 s in {Path(__file__).resolve().parents[2]}" in log  # runs in the submitter's folder


def test_kill_9_makes_the_job_lost_within_5_s_with_a_reason(cli, manager: JobManager) -> None:
    job = _submit(cli, "--stage", "test-sleep", "--set", "seconds=60")
    wait_for(manager, job["id"], lambda j: j.status == "running", timeout=10)
    os.kill(int(job["native_id"]), signal.SIGKILL)
    killed = time.monotonic()
    while True:
        shown = json.loads(cli("show", str(job["id"]), "--json").stdout)
        if shown["status"] == "lost" or time.monotonic() - killed > 5:
            break
    assert shown["status"] == "lost", shown
    assert time.monotonic() - killed <= 5.0
    assert f"process {job['native_id']}" in shown["error"] and "without a finished event" in shown["error"]


def test_cancel_leaves_no_process_of_the_group(cli, manager: JobManager, workspace: Path) -> None:
    job = _submit(cli, "--stage", "test-spawn")
    pgid = int(job["native_id"])
    children_file = workspace / "jobs" / str(job["id"]) / "children.txt"
    deadline = time.monotonic() + 20
    while not children_file.exists() or len(_group(pgid)) < 5:  # runner, 3 children, 1 grandchild
        assert time.monotonic() < deadline, f"children did not start: {_group(pgid)}"
        time.sleep(0.1)
    members = _group(pgid)
    result = cli("cancel", str(job["id"]), "--grace", "1")
    assert result.stdout.split() == [str(job["id"]), "cancelled"]
    assert not [p for p in members if _alive(p)], "processes of the job's group survived"
    assert _group(pgid) == [], "a process of the job's group is still running"  # zombies await init
    events = events_of(workspace, job["id"])
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "cancelled" and events[-1]["exit_code"] == 143


def _group(pgid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (OSError, psutil.Error):
            continue
    return out


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_after_chains_run_in_order_and_a_failed_dependency_fails_its_dependants(cli, manager: JobManager) -> None:
    good = manager.submit("test-sleep", overrides=["seconds=1"], cwd=REPO).to_json()
    follower = _submit(cli, "--stage", "test-sleep", "--after", str(good["id"]))
    bad = manager.submit("test-sleep", overrides=["fail=true", "seconds=1"], cwd=REPO).to_json()
    child = manager.submit("test-sleep", after=[bad["id"]], cwd=REPO).to_json()
    grandchild = manager.submit("test-sleep", after=[child["id"]], cwd=REPO).to_json()
    assert child["status"] == grandchild["status"] == "queued"
    # no CLI stays open: the detached scheduler starts or fails the queued jobs
    final = {j: wait_for(manager, j, lambda row: row.terminal) for j in
             (bad["id"], child["id"], grandchild["id"], good["id"], follower["id"])}
    assert final[bad["id"]].status == "failed" and "asked to fail" in final[bad["id"]].error
    assert final[child["id"]].status == "failed"
    assert final[child["id"]].error.startswith(f"dependency {bad['id']} failed: RuntimeError: asked to fail")
    assert final[grandchild["id"]].status == "failed" and f"dependency {child['id']} failed" in final[grandchild["id"]].error
    assert final[follower["id"]].status == "succeeded"
    assert final[follower["id"]].started_at >= final[good["id"]].finished_at
    assert final[child["id"]].native_id is None  # never started


def test_gpu_stages_wait_for_a_free_slot_and_cpu_stages_do_not(manager: JobManager) -> None:
    first = manager.submit("test-gpu-sleep", overrides=["seconds=1.5"], cwd=REPO).to_json()
    cpu = manager.submit("test-sleep", overrides=["seconds=0.2"], cwd=REPO).to_json()
    second = manager.submit("test-gpu-sleep", overrides=["seconds=0.3"], cwd=REPO).to_json()
    assert first["status"] in ("starting", "running") and first["gpu_slot"] == 0
    assert second["status"] == "queued" and cpu["status"] in ("starting", "running")
    done = {j["id"]: wait_for(manager, j["id"], lambda row: row.terminal) for j in (first, second, cpu)}
    assert all(job.status == "succeeded" for job in done.values())
    assert done[second["id"]].started_at >= done[first["id"]].finished_at, "two GPU jobs shared one slot"
    assert done[cpu["id"]].started_at < done[first["id"]].finished_at, "the CPU job waited for the GPU slot"


def test_resources_are_sampled_without_a_gpu(cli, job_env: dict, manager: JobManager, workspace: Path) -> None:
    job_env["CUDA_VISIBLE_DEVICES"] = ""  # the job sees no GPU, whatever this host has: CPU and RAM only
    job = _submit(cli, "--stage", "test-sleep", "--set", "seconds=1.2")
    wait_for(manager, job["id"], lambda j: j.terminal)
    samples = manager.store.resource_samples(job["id"])
    assert len(samples) >= 3
    assert all(s["rss_bytes"] > 10 * 2**20 and s["gpu_mem_bytes"] is None for s in samples)
    shown = json.loads(cli("show", str(job["id"]), "--json").stdout)
    assert shown["resources"]["rss_bytes"] > 0 and shown["status"] == "succeeded"
    assert "Traceback" not in (workspace / "jobs" / str(job["id"]) / "log.txt").read_text()


def test_gpu_readings_are_what_this_host_has(cli, job_env: dict, manager: JobManager) -> None:
    """With NVML devices the job's samples carry their memory and utilisation; without, none: the
    same test holds on a GPU host and on CI's CPU machine."""
    devices = nvml_device_count()
    if devices:
        job_env["CUDA_VISIBLE_DEVICES"] = "0"
    else:
        job_env.pop("CUDA_VISIBLE_DEVICES", None)
    job = _submit(cli, "--stage", "test-sleep", "--set", "seconds=1.2")
    wait_for(manager, job["id"], lambda j: j.terminal)
    samples = manager.store.resource_samples(job["id"])
    assert len(samples) >= 3
    if devices:
        assert all(s["gpu_mem_bytes"] is not None and s["gpu_util"] is not None and 0 <= s["gpu_util"] <= 100
                   and s["proc_gpu_mem_bytes"] == 0 for s in samples), samples  # the sleeper holds no GPU memory
    else:
        assert all(s["gpu_mem_bytes"] is None and s["gpu_util"] is None for s in samples), samples


def test_retry_and_resume_are_new_attempts_linked_to_the_old_job(cli, manager: JobManager, workspace: Path) -> None:
    result = cli("run", "--stage", "test-gpu-sleep", "--set", "seconds=0.1", "--set", "fail=true", "--follow", check=False)
    assert result.returncode == 1 and "failed: RuntimeError: asked to fail" in result.stdout
    old = int(result.stdout.split()[0])
    retried = int(cli("retry", str(old)).stdout)
    resumed = int(cli("resume", str(old)).stdout)
    for new_id, resume in ((retried, False), (resumed, True)):
        job = manager.job(new_id)
        assert job.parent_id == old and job.attempt == 2 and job.resume is resume
        assert job.params == manager.job(old).params
        spec = json.loads((workspace / "jobs" / str(new_id) / "spec.json").read_text())
        assert spec["resume"] is resume and spec["attempt"] == 2 and spec["parent"] == old
    cpu_job = _submit(cli, "--stage", "test-sleep", "--set", "seconds=0.1")
    wait_for(manager, cpu_job["id"], lambda j: j.terminal)
    refused = cli("resume", str(cpu_job["id"]), check=False)
    assert refused.returncode == 2 and "cannot resume" in refused.stderr


def test_each_gpu_job_is_pinned_to_its_own_visible_device(
    manager: JobManager, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # names only: no GPU is touched
    monkeypatch.delenv("RSNA_TUI_GPU_SLOTS")
    first = manager.submit("test-gpu-sleep", overrides=["seconds=0.8"], cwd=REPO)
    second = manager.submit("test-gpu-sleep", overrides=["seconds=0.1"], cwd=REPO)
    assert (first.status, second.status) != ("queued", "queued") and {first.gpu_slot, second.gpu_slot} == {0, 1}
    for job in (first, second):
        assert wait_for(manager, job.id, lambda j: j.terminal).status == "succeeded"
        log = (workspace / "jobs" / str(job.id) / "log.txt").read_text()
        device = "35"[job.gpu_slot]
        assert f"CUDA_VISIBLE_DEVICES={device} nnUNet_raw={workspace / 'nnUNet_raw'}" in log


def test_cancelling_a_queued_job_fails_its_dependants_and_the_scheduler_exits(
    cli, manager: JobManager, workspace: Path
) -> None:
    running = manager.submit("test-sleep", overrides=["seconds=30"], cwd=REPO)
    queued = manager.submit("test-sleep", after=[running.id], cwd=REPO)
    dependant = manager.submit("test-sleep", after=[queued.id], cwd=REPO)
    assert queued.status == dependant.status == "queued"
    assert cli("cancel", str(queued.id)).stdout.split() == [str(queued.id), "cancelled"]
    assert manager.job(queued.id).native_id is None
    failed = wait_for(manager, dependant.id, lambda j: j.terminal, timeout=10)
    assert failed.status == "failed" and failed.error == f"dependency {queued.id} cancelled: cancelled before it started"
    assert manager.cancel(running.id, grace=2).status == "cancelled"
    deadline = time.monotonic() + 5
    while _lock_held(workspace / "scheduler.lock"):  # nothing queued: the scheduler has gone
        assert time.monotonic() < deadline, "the scheduler process did not exit"
        time.sleep(0.1)


def test_logs_follow_prints_until_the_job_ends(cli, manager: JobManager) -> None:
    job = manager.submit("test-sleep", overrides=["seconds=1"], cwd=REPO)
    followed = cli("logs", str(job.id), "-f")
    assert manager.job(job.id).terminal
    assert followed.stdout.splitlines()[0] == f"slept 1.0 s in {REPO}"


def test_a_reused_pid_does_not_keep_a_dead_job_running(manager: JobManager) -> None:
    """The job's pid now belongs to another live process (ours): its start time gives it away."""
    job = manager.submit("test-sleep", start=False)
    manager.store.update_job(job.id, status="running", native_id=str(os.getpid()), host=manager.executors["local"].host,
                             proc_create_time=psutil.Process().create_time() - 100.0)
    manager.refresh()
    lost = manager.job(job.id)
    assert lost.status == "lost" and f"process {os.getpid()}" in lost.error


def test_a_stage_that_cannot_be_imported_fails_with_the_reason(manager: JobManager, workspace: Path) -> None:
    job = manager.submit("test-sleep", function="tests.app.no_such_module:run", cwd=REPO)
    failed = wait_for(manager, job.id, lambda j: j.terminal)
    assert failed.status == "failed" and failed.exit_code == 1
    assert failed.error == "ModuleNotFoundError: No module named 'tests.app.no_such_module'"
    assert "Traceback" in (workspace / "jobs" / str(job.id) / "log.txt").read_text()
