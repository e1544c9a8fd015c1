"""The Slurm backend against a real single-node Slurm that this module starts (tests/app/slurm_cluster.py).

The cluster (munge, slurmctld, slurmd of Debian's packages) stays up for the whole module; each test
gets its own workspace with a ``config.toml`` that polls Slurm on every refresh, and its jobs are
cancelled afterwards. The tests skip only when the cluster cannot be started (not root, no package).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import psutil
import pytest

from rsna_tui.jobs.config import ConfigError, load_config
from rsna_tui.jobs.manager import JobManager, _lock_held
from rsna_tui.jobs.slurm import SCRIPT, SlurmExecutor, file_system_of, node_local_reason
from rsna_tui.workspace import Workspace
from tests.app.conftest import REPO, events_of, wait_for
from tests.app.slurm_cluster import ClusterUnavailable, SlurmCluster

CONFIG = 'backend = "slurm"\n[slurm]\npoll_seconds = 0\n'


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    try:
        cluster = SlurmCluster.start()
    except ClusterUnavailable as exc:
        pytest.skip(f"no Slurm for these tests: {exc}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.cancel_all()
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


@pytest.fixture
def ws(slurm: SlurmCluster, workspace: Path, job_env: dict[str, str]) -> Iterator[Path]:
    """A workspace whose jobs go to the cluster by default; its jobs are cancelled at the end."""
    (workspace / "config.toml").write_text(CONFIG)
    yield workspace
    slurm.cancel_all()
    # the detached scheduler watches Slurm jobs: once they have all ended, it exits
    until(lambda: not _lock_held(workspace / "scheduler.lock"), timeout=60, what="the workspace's scheduler to exit")


@pytest.fixture
def mgr(ws: Path) -> Iterator[JobManager]:
    manager = JobManager(Workspace(ws))
    yield manager
    manager.close()


def squeue(native_id: str | None) -> tuple[str, str]:
    """Slurm's own (state, reason) for a job, asked directly."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(native_id), "-o", "%T|%r"],
                         capture_output=True, text=True, check=True).stdout.strip()
    state, _, reason = out.partition("|")
    return state, reason


def until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.2)


def test_a_tiny_stage_runs_on_slurm_and_its_events_are_folded(cli: Callable, ws: Path) -> None:
    job = json.loads(cli("run", "--stage", "test-sleep", "--backend", "slurm", "--follow", "--json").stdout)
    assert job["status"] == "succeeded" and job["backend"] == "slurm" and job["native_id"].isdigit()
    shown = json.loads(cli("show", str(job["id"]), "--json").stdout)
    assert shown["metrics"]["loss"]["value"] == 0.5 and "marker" in shown["artefacts"]
    job_dir = ws / "jobs" / str(job["id"])
    script = (job_dir / SCRIPT).read_text()
    assert f"#SBATCH --output={job_dir / 'log.txt'}" in script and "rsna_tui.jobs.runner" in script
    assert "slept 0.2 s" in (job_dir / "log.txt").read_text()
    assert squeue(job["native_id"])[0] == "COMPLETED"
    listed = cli("jobs").stdout.splitlines()
    assert listed[0].split("\t")[4] == "backend" and listed[1].split("\t")[4] == f"slurm {job['native_id']}"
    assert f"native_id  {job['native_id']}" in cli("show", str(job["id"])).stdout


def test_a_failing_stage_is_failed_with_the_reason(cli: Callable, ws: Path) -> None:
    result = cli("run", "--stage", "test-sleep", "--set", "fail=true", "--follow", "--json", check=False)
    job = json.loads(result.stdout)
    assert result.returncode == 1 and job["backend"] == "slurm"
    assert job["status"] == "failed" and job["error"] == "RuntimeError: asked to fail"
    assert squeue(job["native_id"]) == ("FAILED", "NonZeroExitCode")


def test_cancel_ends_the_slurm_job_and_leaves_no_process(cli: Callable, mgr: JobManager, ws: Path) -> None:
    job = mgr.submit("test-spawn", params={"seconds": 120.0}, cwd=REPO)
    children = ws / "jobs" / str(job.id) / "children.txt"
    until(lambda: children.exists() and len(children.read_text().split()) == 3, what="the job's children")
    runner_pid = next(e["pid"] for e in events_of(ws, job.id) if e["type"] == "started")
    pids = [runner_pid, *map(int, children.read_text().split())]
    assert all(psutil.pid_exists(p) for p in pids)
    assert cli("cancel", str(job.id)).stdout.split() == [str(job.id), "cancelled"]
    assert squeue(mgr.job(job.id).native_id)[0] == "CANCELLED"
    until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids),
          timeout=20, what="the job's processes to end")
    assert mgr.job(job.id).status == "cancelled"


def test_after_chains_are_submitted_at_once_and_run_in_order(mgr: JobManager, ws: Path) -> None:
    first = mgr.submit("test-sleep", params={"seconds": 2.0, "steps": 2, "fail": False}, cwd=REPO)
    second = mgr.submit("test-sleep", after=[first.id], cwd=REPO)
    third = mgr.submit("test-sleep", after=[second.id], cwd=REPO)
    assert all(j.native_id for j in (first, second, third)), "the whole chain is handed to Slurm at once"
    detail = subprocess.run(["scontrol", "show", "job", str(third.native_id)], capture_output=True, text=True).stdout
    assert f"Dependency=afterok:{second.native_id}" in detail
    assert mgr.job(third.id).status == "queued"
    done = [wait_for(mgr, j.id, lambda r: r.terminal, timeout=90) for j in (first, second, third)]
    assert [j.status for j in done] == ["succeeded"] * 3
    assert done[0].finished_at <= done[1].started_at and done[1].finished_at <= done[2].started_at
    failing = mgr.submit("test-sleep", params={"seconds": 0.5, "steps": 1, "fail": True}, cwd=REPO)
    dependant = mgr.submit("test-sleep", after=[failing.id], cwd=REPO)
    dependant = wait_for(mgr, dependant.id, lambda r: r.terminal, timeout=60)
    assert dependant.status == "failed" and "DependencyNeverSatisfied" in (dependant.error or "")
    assert dependant.error.startswith(f"dependency {failing.id} failed: RuntimeError: asked to fail")


def test_one_squeue_per_refresh_and_an_array_for_several_values(cli: Callable, mgr: JobManager, ws: Path) -> None:
    slurm = mgr.executors["slurm"]
    assert isinstance(slurm, SlurmExecutor)
    from rsna_tui.jobs.arrays import submit_array

    tasks = submit_array(mgr, "test-gpu-sleep", "tiny", [{"seconds": s} for s in (3.0, 3.5, 4.0)], cwd=REPO)
    assert slurm.commands["sbatch"] == 1
    array_id = tasks[0].native_id.split("_")[0]
    assert [t.native_id for t in tasks] == [f"{array_id}_{k}" for k in range(3)]
    slurm.commands.clear()
    mgr.refresh()
    assert dict(slurm.commands) == {"squeue": 1}
    done = [wait_for(mgr, t.id, lambda r: r.terminal, timeout=60) for t in tasks]
    assert [t.status for t in done] == ["succeeded"] * 3
    logs = [(ws / "jobs" / str(t.id) / "log.txt").read_text() for t in tasks]
    assert all("CUDA_VISIBLE_DEVICES=" in text and "CUDA_VISIBLE_DEVICES=None" not in text for text in logs)
    ids = cli("run", "--stage", "test-sleep", "--array", "seconds=0.1,0.2").stdout.split()
    jobs = [json.loads(cli("show", i, "--json").stdout) for i in ids]
    assert len(jobs) == 2 and jobs[0]["native_id"].endswith("_0") and jobs[1]["native_id"].endswith("_1")


def test_convert_over_three_shards_gives_the_table_of_a_local_run(
    cli: Callable, ws: Path, demo_cohort: Path, tmp_path: Path, job_env: dict[str, str]
) -> None:
    params = ["--stage", "convert", "--set", f"dataset={demo_cohort}", "--set", "workers=1"]
    merged = json.loads(cli("run", *params, "--set", "shards=3", "--follow", "--json", timeout=300).stdout)
    assert merged["status"] == "succeeded" and merged["backend"] == "slurm"
    shards = [json.loads(cli("show", str(i), "--json").stdout) for i in merged["depends_on"]]
    assert len(shards) == 3 and {s["native_id"].split("_")[0] for s in shards} == {shards[0]["native_id"].split("_")[0]}
    local_ws = tmp_path / "local"
    local = subprocess.run(
        [sys.executable, "-m", "rsna_tui", "--workspace", str(local_ws), "run", *params, "--backend", "local",
         "--follow", "--json"], cwd=REPO, env=job_env, capture_output=True, text=True, timeout=300)
    assert json.loads(local.stdout)["status"] == "succeeded", local.stderr
    tables = [pd.read_csv(next((root / "converted").glob("*/train")) / "conversion.csv").drop(columns="seconds")
              for root in (ws, local_ws)]
    assert len(tables[0]) == 9 and tables[0].equals(tables[1])
    points = [(next((root / "converted").glob("*/train")) / "localizers_voxel.csv").read_text() for root in (ws, local_ws)]
    assert points[0] == points[1]


def test_a_job_whose_node_is_set_down_is_lost_with_slurms_reason(
    slurm: SlurmCluster, mgr: JobManager, ws: Path
) -> None:
    job = mgr.submit("test-spawn", params={"seconds": 120.0}, cwd=REPO)
    wait_for(mgr, job.id, lambda r: r.status == "running", timeout=60)
    try:
        slurm.scontrol("update", f"nodename={slurm.host}", "state=down", "reason=test-node-down")
        # no refresh here: the detached scheduler watches Slurm jobs and starts the next attempt itself
        lost = until(lambda: (row := mgr.job(job.id)).terminal and row.error and "rerun" in row.error and row,
                     what="the scheduler to mark the job lost and rerun it")
        assert lost.status == "lost" and "NODE_FAIL" in lost.error and slurm.host in lost.error
        again = next(j for j in mgr.store.list_jobs() if j.parent_id == job.id)
        assert f"rerun as job {again.id}" in lost.error
        assert again.backend == "slurm" and again.attempt == 2 and again.status == "queued" and again.native_id
    finally:
        slurm.scontrol("update", f"nodename={slurm.host}", "state=resume")
        slurm.wait_idle()


def test_a_job_killed_by_its_time_limit_is_resubmitted_and_resumes_its_epoch_counter(
    mgr: JobManager, ws: Path
) -> None:
    (ws / "config.toml").write_text(CONFIG + '[slurm.resources.test-epochs]\ntime = "0:01:00"\n')
    manager = JobManager(Workspace(ws))
    try:
        first = manager.submit("test-epochs", params={"epochs": 100, "seconds": 1.0, "name": "limit"}, cwd=REPO)
        assert "#SBATCH --time=0:01:00" in (ws / "jobs" / str(first.id) / SCRIPT).read_text()
        # whichever process refreshes first (this one or the detached scheduler) resubmits it
        ended = wait_for(manager, first.id, lambda r: "resumed as job" in (r.error or ""), timeout=150)
        assert ended.status == "failed" and "TIMEOUT" in ended.error and "time limit" in ended.error
        second = next(j for j in manager.store.list_jobs() if j.parent_id == first.id)
        assert second.resume and second.attempt == 2 and f"resumed as job {second.id}" in ended.error
        second = wait_for(manager, second.id, lambda r: r.terminal, timeout=120)
        assert second.status == "succeeded", second.error
    finally:
        manager.close()
    steps = [[e["step"] for e in events_of(ws, j) if e["type"] == "metric"] for j in (first.id, second.id)]
    assert steps[0] and steps[0] == list(range(len(steps[0])))
    assert steps[1] == list(range(steps[0][-1] + 1, 100)), "the second attempt continues after the last epoch"


def test_the_workspace_must_be_on_a_file_system_the_nodes_share(slurm: SlurmCluster, mgr: JobManager, ws: Path) -> None:
    local_fs = file_system_of(ws)
    reason = node_local_reason(ws, [slurm.host, "gpu01"], slurm.host, local_fs)
    assert reason and str(ws) in reason and local_fs[0] in reason and "gpu01" in reason
    assert node_local_reason(ws, [slurm.host, "gpu01"], slurm.host, ("nfs4", "/home")) is None
    assert node_local_reason(ws, [slurm.host], slurm.host, local_fs) is None
    executor = mgr.executors["slurm"]
    assert isinstance(executor, SlurmExecutor)
    executor.check_workspace()  # every node of this cluster is this host: accepted


def test_config_toml_gives_the_backend_and_the_resources(tmp_path: Path) -> None:
    assert load_config(tmp_path).backend == "local"
    (tmp_path / "config.toml").write_text(
        'backend = "slurm"\n[slurm]\npartition = "gpu"\nextra = ["--constraint=a100"]\n'
        '[slurm.resources.train3d]\nmem = "200G"\n'
    )
    config = load_config(tmp_path)
    assert config.backend == "slurm" and config.slurm.partition == "gpu" and config.slurm.extra == ("--constraint=a100",)
    full = config.slurm.resources_for("train3d", "full", True)
    assert (full.gpus, full.cpus, full.mem, full.time) == (1, 16, "200G", "24:00:00")
    assert config.slurm.resources_for("train3d", "tiny", True).gpus == 1
    (tmp_path / "config.toml").write_text('[slurm]\npartiton = "gpu"\n')
    with pytest.raises(ConfigError, match="partiton"):
        load_config(tmp_path)


def test_an_unknown_backend_is_refused_with_the_valid_ones(cli: Callable) -> None:
    result = cli("run", "--stage", "test-sleep", "--backend", "pbs", check=False)
    assert result.returncode == 2 and "unknown backend 'pbs'; backends: local, slurm" in result.stderr
    assert cli("jobs", "--json").stdout.strip() == "[]"


def test_the_planner_submits_the_whole_plan_to_slurm_at_once(cli: Callable, mgr: JobManager, ws: Path) -> None:
    target = json.loads(cli("run", "--stage", "test-top", "--set", "test-make.seconds=1.5", "--backend", "slurm",
                            "--json").stdout)
    jobs = {j.stage: j for j in mgr.store.list_jobs()}
    assert sorted(jobs) == ["test-make", "test-top", "test-use"] and target["id"] == jobs["test-top"].id
    assert all(j.backend == "slurm" and j.native_id for j in jobs.values()), "every step handed to Slurm at once"
    top = subprocess.run(["scontrol", "show", "job", str(jobs["test-top"].native_id)], capture_output=True,
                         text=True).stdout
    assert f"Dependency=afterok:{jobs['test-use'].native_id}" in top
    done = [wait_for(mgr, jobs[s].id, lambda r: r.terminal, timeout=90) for s in ("test-make", "test-use", "test-top")]
    assert [j.status for j in done] == ["succeeded"] * 3
    assert done[0].finished_at <= done[1].started_at and done[1].finished_at <= done[2].started_at
