"""The planner (issue 12): plans from the stage table's inputs, reuse / wait / run by fingerprint, the
refusals at submission, two planners at once, and the real chain up to finetune2 on a tiny cohort.

The fast tests use the test stages ``test-make -> test-use -> test-top`` (tests/app/stages_for_tests.py):
real jobs in real processes, a second each. One test runs the real chain (demo-data ... finetune2).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rsna_tui import cli as cli_module
from rsna_tui.jobs.manager import JobManager
from rsna_tui.jobs.planner import plan
from rsna_tui.jobs.store import JobRow, Store
from tests.app.conftest import REPO, wait_for

CHAIN = ["demo-data", "convert", "stage1-data", "train2d", "roi", "train3d", "finetune2"]

#: The real chain at toy size: 12 series of 32^3, one short epoch per training, 16^3 stage-2 crops.
TINY = [f"--set={s}" for s in (
    "demo-data.n=12", "demo-data.size=32", "convert.workers=1",
    "train2d.epochs=1", "train2d.iterations=2", "train2d.val_iterations=1", "train2d.validate=false",
    "train2d.device=cpu", "roi.device=cpu", "train3d.epochs=1", "train3d.iterations=2", "train3d.val_iterations=1",
    "train3d.device=cpu", "device=cpu", "epochs=1", "iterations=2", "val_iterations=1", "size=16",
    "features=4,8,16", "blocks=1,1,1",
)]


def dry_plan(cli, *args: str) -> dict:
    return json.loads(cli("run", *args, "--dry-run", "--json").stdout)


def actions(planned: dict) -> list[tuple[str, str]]:
    return [(s["stage"], s["action"]) for s in planned["steps"]]


def job_count(workspace: Path) -> int:
    if not (workspace / "jobs.db").exists():
        return 0
    with Store(workspace / "jobs.db") as store:
        return store.count_jobs()


def test_fresh_workspace_plans_the_chain_of_finetune2_and_submits_nothing(cli, workspace: Path) -> None:
    planned = dry_plan(cli, "--stage", "finetune2")
    assert planned["target"] == "finetune2"
    assert [s["stage"] for s in planned["steps"]] == CHAIN  # not finetune1, not predict
    assert all(s["action"] == "run" and s["job_id"] is None for s in planned["steps"])
    index = {s["stage"]: s["index"] for s in planned["steps"]}
    steps = {s["stage"]: s for s in planned["steps"]}
    assert steps["roi"]["upstream"] == [index["convert"], index["train2d"]]
    assert steps["finetune2"]["upstream"] == [index["roi"], index["train3d"]]
    assert steps["convert"]["params"]["split"] == steps["roi"]["params"]["split"] == "train"
    assert steps["roi"]["params"]["model"] == "train2d/model"  # a job's reference once it has an id
    assert steps["finetune2"]["params"]["init_from"] == "train3d/checkpoint"
    assert steps["train3d"]["params"]["init_from"] == ""
    assert steps["demo-data"]["reason"] == "no earlier demo-data job"
    assert len({s["fingerprint"] for s in planned["steps"]}) == len(CHAIN)
    assert job_count(workspace) == 0
    text = cli("run", "--stage", "finetune2", "--dry-run").stdout
    assert "no earlier train2d job" in text and text.count("run") >= len(CHAIN)


def test_finetune2_brings_everything_up_to_date_then_reuses_it(cli, workspace: Path) -> None:
    started = time.monotonic()
    result = cli("run", "--stage", "finetune2", *TINY, "--follow", "--json", timeout=1800)
    print(f"tiny chain demo-data -> finetune2: {time.monotonic() - started:.0f} s")
    target = json.loads(result.stdout)
    with Store(workspace / "jobs.db") as store:
        jobs = sorted(store.list_jobs(), key=lambda j: j.id)
        artefacts = {j.stage: store.artefacts(j.id) for j in jobs}
    assert [j.stage for j in jobs] == CHAIN and all(j.status == "succeeded" for j in jobs)
    assert target["id"] == jobs[-1].id and target["status"] == "succeeded"
    ids = {j.stage: j.id for j in jobs}
    # inputs reached the stages as paths: roi's model from its train2d job, finetune2's weights from train3d
    roi, finetune2 = jobs[CHAIN.index("roi")], jobs[-1]
    assert roi.params["model"] == f"job:{ids['train2d']}/model"
    assert finetune2.params["init_from"] == f"job:{ids['train3d']}/checkpoint"
    log = (workspace / "jobs" / str(finetune2.id) / "log.txt").read_text()
    assert f"input init_from: {artefacts['train3d']['checkpoint']} (job {ids['train3d']}'s checkpoint)" in log
    assert roi.depends_on == [ids["convert"], ids["train2d"]]

    again = json.loads(cli("run", "--stage", "finetune2", *TINY, "--json").stdout)
    assert again["id"] == finetune2.id and job_count(workspace) == len(CHAIN)  # nothing new submitted
    reused = dry_plan(cli, "--stage", "finetune2", *TINY)
    assert [(s["stage"], s["action"], s["job_id"]) for s in reused["steps"]] == [(s, "reuse", ids[s]) for s in CHAIN]
    # a reused train2d reaches roi as its model folder, not a reference
    assert reused["steps"][CHAIN.index("roi")]["params"]["model"] == artefacts["train2d"]["model"]

    changed = dry_plan(cli, "--stage", "finetune2", *TINY, "--set", "train2d.epochs=2")
    assert actions(changed) == [("demo-data", "reuse"), ("convert", "reuse"), ("stage1-data", "reuse"),
                                ("train2d", "run"), ("roi", "run"), ("train3d", "run"), ("finetune2", "run")]
    reasons = {s["stage"]: s["reason"] for s in changed["steps"]}
    assert reasons["train2d"] == f"parameters differ from job {ids['train2d']}: epochs 1 -> 2"
    assert reasons["roi"] == f"stale: train2d runs again, so job {ids['roi']} (same parameters) is out of date"
    assert reasons["finetune2"].startswith("stale: roi, train3d run again")


def test_two_planners_started_at_once_submit_each_step_once(job_env: dict, workspace: Path,
                                                              manager: JobManager) -> None:
    command = [sys.executable, "-m", "rsna_tui", "run", "--stage", "test-top", "--set", "test-make.seconds=1.5", "--json"]
    processes = [subprocess.Popen(command, cwd=REPO, env=job_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    targets = [json.loads(out)["id"] for out, _ in outputs]
    assert targets[0] == targets[1]
    jobs = manager.store.list_jobs()
    assert sorted(j.stage for j in jobs) == ["test-make", "test-top", "test-use"]
    submitted = [err.count("run as job") for _, err in outputs]
    assert sorted(submitted) == [0, 3]
    waited = outputs[submitted.index(0)][1]
    assert waited.count("wait for job") + waited.count("reuse job") == 3
    assert wait_for(manager, targets[0], lambda j: j.terminal).status == "succeeded"


def test_refusals_name_the_problem_and_submit_nothing(cli, workspace: Path) -> None:
    cases = [
        (["run", "--stage", "convert", "--set", "dataset=nope"], 2, "convert: dataset 'nope' is neither registered"),
        (["run", "--stage", "finetune2", "--set", "dataset=nope"], 2, "dataset 'nope' is neither registered"),
        (["pipeline", "--dataset", "nope"], 2, "dataset 'nope' is neither registered"),
        (["run", "--stage", "test-use", "--no-deps"], 1,
         "test-use.source needs a test-make job (no earlier test-make job), and --no-deps plans no upstream job"),
        (["run", "--stage", "test-use", "--set", "source=/no/such/file"], 1, "test-use.source: /no/such/file does not exist"),
        (["run", "--stage", "test-use", "--set", "source=41"], 1, "no job 41"),
        (["run", "--stage", "test-use", "--set", "source=test-top"], 2, "test-top is not an input of source"),
        (["run", "--stage", "test-top", "--set", "test-use.word=other"], 2,
         "--set test-use.word=other conflicts with test-top's word=hello: test-use must match it"),
        (["run", "--stage", "test-use", "--set", "test-top.word=x"], 2, "test-top is not part of the plan for test-use"),
        (["run", "--stage", "test-use", "--set", "tset-make.word=x"], 2, "unknown stage 'tset-make'"),
        (["run", "--stage", "test-use", "--rerun", "nope"], 2, "unknown stage 'nope'"),
        (["run", "--stage", "test-make", "--rerun", "test-use"], 2, "--rerun test-use: test-use is not part of the plan"),
        (["run", "--stage", "test-use", "--set", "test-make.seconds=soon"], 2, "seconds: 'soon' is not a valid float"),
        (["run", "--stage", "finetune2", "--profile", "huge"], 2, "unknown profile 'huge'"),
        (["pipeline", "--until", "nope"], 2, "--until nope: not a stage of this pipeline"),
        (["pipeline", "--set", "epochs=2"], 2, "name the stage, as stage.key=value"),
    ]
    for args, code, message in cases:
        for dry in ([], ["--dry-run"]):
            result = cli(*args, *dry, check=False)
            assert (result.returncode, result.stdout) == (code, ""), (args, result.stderr)
            assert message in result.stderr, (args, result.stderr)
    assert job_count(workspace) == 0


def test_a_missing_profile_value_of_an_upstream_stage_is_refused(
    workspace: Path, job_env: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import engine.stages

    profiles = engine.stages._profiles()
    del profiles["train2d"]["tiny"]["epochs"]
    monkeypatch.setattr(engine.stages, "_profiles", lambda: profiles)
    assert cli_module.main(["-w", str(workspace), "run", "--stage", "finetune2"]) == 2
    assert "profiles.toml gives no tiny value for train2d: epochs" in capsys.readouterr().err
    assert job_count(workspace) == 0


def test_a_failed_step_fails_its_dependants_naming_it_and_cancels_nothing_else(cli, manager: JobManager) -> None:
    other = json.loads(cli("run", "--stage", "test-sleep", "--set", "seconds=3", "--json").stdout)
    result = cli("run", "--stage", "test-top", "--set", "test-make.fail=true", "--follow", "--json", check=False)
    assert result.returncode == 1
    jobs = {j.stage: j for j in manager.store.list_jobs()}
    make, use, top = jobs["test-make"], jobs["test-use"], jobs["test-top"]
    assert (make.status, make.error) == ("failed", "RuntimeError: asked to fail")
    assert (use.status, use.error) == ("failed", f"dependency {make.id} failed: RuntimeError: asked to fail")
    assert top.status == "failed" and top.error.startswith(f"dependency {use.id} failed: dependency {make.id} failed")
    assert f"[{use.id} test-use] failed: dependency {make.id} failed" in result.stderr
    assert wait_for(manager, other["id"], lambda j: j.terminal).status == "succeeded"
    # the failed job is never reused: the next plan runs the chain again
    assert [a for _, a in actions(dry_plan(cli, "--stage", "test-top", "--set", "test-make.fail=true"))] == ["run"] * 3


def test_force_rerun_no_deps_job_ids_wait_and_vanished_outputs(cli, manager: JobManager, workspace: Path) -> None:
    first = json.loads(cli("run", "--stage", "test-top", "--follow", "--json").stdout)
    assert first["status"] == "succeeded"
    ids = {j.stage: j.id for j in manager.store.list_jobs()}
    made = manager.store.artefacts(ids["test-make"])["made"]
    again = cli("run", "--stage", "test-top", "--follow")
    assert again.stdout.strip() == str(ids["test-top"])
    assert f"up to date: job {ids['test-top']} (test-top) is reused, nothing to run" in again.stderr

    forced = dry_plan(cli, "--stage", "test-top", "--force")
    assert actions(forced) == [("test-make", "reuse"), ("test-use", "reuse"), ("test-top", "run")]
    assert forced["steps"][-1]["reason"] == "--force"
    rerun = dry_plan(cli, "--stage", "test-top", "--rerun", "test-use")
    assert actions(rerun) == [("test-make", "reuse"), ("test-use", "run"), ("test-top", "run")]
    assert [s["reason"] for s in rerun["steps"][1:]] == [
        "--rerun test-use", f"stale: test-use runs again, so job {ids['test-top']} (same parameters) is out of date"]

    no_deps = dry_plan(cli, "--stage", "test-use", "--no-deps", "--set", "times=5")
    assert actions(no_deps) == [("test-make", "reuse"), ("test-use", "run")]
    assert no_deps["steps"][1]["params"]["source"] == made
    assert no_deps["steps"][1]["reason"] == "--no-deps"
    again = dry_plan(cli, "--stage", "test-use", "--no-deps")  # an equal job succeeded: submitted all the same
    assert actions(again) == [("test-make", "reuse"), ("test-use", "run")]
    by_id = dry_plan(cli, "--stage", "test-use", "--set", f"source={ids['test-make']}", "--set", "times=7")
    assert actions(by_id) == [("test-use", "run")] and by_id["steps"][0]["params"]["source"] == made

    used = Path(manager.store.artefacts(ids["test-use"])["used"])
    used.unlink()
    gone = dry_plan(cli, "--stage", "test-top")
    assert actions(gone) == [("test-make", "reuse"), ("test-use", "run"), ("test-top", "run")]
    assert gone["steps"][1]["reason"] == (f"job {ids['test-use']} had the same parameters and inputs, but its output "
                                          f"{used} is gone")

    queued = json.loads(cli("run", "--stage", "test-top", "--set", "word=w", "--set", "test-make.seconds=3",
                            "--json").stdout)
    waiting = dry_plan(cli, "--stage", "test-top", "--set", "word=w", "--set", "test-make.seconds=3")
    assert [s["action"] for s in waiting["steps"]] == ["wait"] * 3 and waiting["steps"][-1]["job_id"] == queued["id"]
    assert wait_for(manager, queued["id"], lambda j: j.terminal).status == "succeeded"
    retried = int(cli("retry", str(ids["test-top"])).stdout)  # same parameters and inputs: same fingerprint
    assert manager.job(retried).fingerprint == manager.job(ids["test-top"]).fingerprint is not None
    wait_for(manager, retried, lambda j: j.terminal)


def _succeeded(store: Store, stage: str, created: float, fingerprint: str | None = None) -> int:
    job = store.insert_job(JobRow(id=0, stage=stage, profile="tiny", params={}, status="succeeded",
                                  created_at=created, fingerprint=fingerprint))
    return job.id


def _artefact(store: Store, job_id: int, name: str, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with store.write() as conn:
        conn.execute("INSERT INTO artefacts (job_id, name, path, t) VALUES (?, ?, ?, ?)", (job_id, name, str(path), 0.0))


def _jobs_9_and_10(store: Store, stage: str, name: str, folder: Path, fingerprint: str | None = None) -> None:
    """Eight other jobs, then jobs 9 and 10 of ``stage``, all created in the same second, both succeeded
    with artefact ``name`` = ``folder/<id>``."""
    second = float(int(time.time()))
    for _ in range(8):
        _succeeded(store, "test-sleep", second)
    for _ in range(2):
        job_id = _succeeded(store, stage, second, fingerprint)
        _artefact(store, job_id, name, folder / str(job_id))


def test_of_two_equal_jobs_created_in_the_same_second_job_10_wins(manager: JobManager, tmp_path: Path) -> None:
    """Issue 16: ids compared as strings made job 9 beat job 10; reuse and the gateway's lookup use ids."""
    from rsna_tui.gateway import latest_artefact

    _jobs_9_and_10(manager.store, "test-make", "made", tmp_path / "made", plan(manager, "test-make").steps[0].fingerprint)
    assert [j.id for j in manager.store.list_jobs(stage="test-make")] == [10, 9]
    step = plan(manager, "test-make").steps[0]
    assert (step.action, step.job_id) == ("reuse", 10)

    with Store(tmp_path / "other.db") as store:
        _jobs_9_and_10(store, "train2d", "model", tmp_path / "model")
        assert latest_artefact(store, "train2d", "model") == tmp_path / "model" / "10"
        (tmp_path / "model" / "10").rmdir()  # a model folder that is gone is passed over
        assert latest_artefact(store, "train2d", "model") == tmp_path / "model" / "9"
        assert latest_artefact(store, "finetune1", "model") is None


def test_pipeline_plans_predict_then_evaluate_under_every_profile(cli, workspace: Path) -> None:
    from engine.stages import PROFILES

    stages = json.loads(cli("stages", "--json").stdout)
    assert [s["name"] for s in stages if "profile_errors" in s] == []
    roi = next(s for s in stages if s["name"] == "roi")
    assert roi["inputs"] == [
        {"stage": "convert", "param": "", "artefact": "", "match": ["dataset", "split"], "fixed": {}, "when_dataset": ""},
        {"stage": "train2d", "param": "model", "artefact": "model", "match": [], "fixed": {}, "when_dataset": ""}]
    assert "    inputs: convert (dataset, split), train2d.model -> model" in cli("stages").stdout
    for profile in PROFILES:
        planned = json.loads(cli("pipeline", "--profile", profile, "--dry-run", "--json").stdout)
        assert planned["target"] == "evaluate" and planned["profile"] == profile
        assert [s["stage"] for s in planned["steps"]] == [
            "demo-data", "convert", "stage1-data", "train2d", "roi", "train3d", "finetune1", "finetune2", "predict",
            "evaluate"]
        steps = {s["stage"]: s for s in planned["steps"]}
        assert steps["predict"]["params"]["models"] == "finetune1/model,finetune2/model"
        assert steps["predict"]["params"]["split"] == "test"
        assert steps["evaluate"]["params"] == {"predictions": "predict/predictions", "truth": "predict/truth"}
    until = json.loads(cli("pipeline", "--until", "train2d", "--dry-run", "--json").stdout)
    assert [s["stage"] for s in until["steps"]] == ["demo-data", "convert", "stage1-data", "train2d"]
    assert job_count(workspace) == 0
