"""The CLI's contract: JSON that parses, exit codes, bad parameters, read-only databases (pipeline: test_planner)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.stages import STAGES
from rsna_tui.jobs.manager import JobManager
from rsna_tui.jobs.store import Store


def test_bad_set_exits_2_listing_the_valid_keys(cli) -> None:
    unknown = cli("run", "--stage", "evaluate", "--set", "predicitons=a.csv", check=False)
    assert unknown.returncode == 2
    assert "predicitons" in unknown.stderr and "valid keys: predictions, truth" in unknown.stderr
    bad_value = cli("run", "--stage", "test-sleep", "--set", "steps=many", check=False)
    assert bad_value.returncode == 2 and "steps: 'many' is not a valid int" in bad_value.stderr
    assert "valid keys: seconds, steps, fail" in bad_value.stderr
    not_pair = cli("run", "--stage", "test-sleep", "--set", "steps", check=False)
    assert not_pair.returncode == 2 and "not key=value" in not_pair.stderr
    stage = cli("run", "--stage", "train4d", check=False)
    assert stage.returncode == 2 and "stages: demo-data, convert" in stage.stderr
    assert not cli("jobs", "--json").stdout.strip("[]\n"), "a refused run left a job behind"


def test_json_outputs_parse(cli, workspace: Path) -> None:
    stages = json.loads(cli("stages", "--json").stdout)
    evaluate = next(s for s in stages if s["name"] == "evaluate")
    assert [p["name"] for p in evaluate["params"]] == ["predictions", "truth"]
    train3d = next(s for s in stages if s["name"] == "train3d")
    epochs = next(p for p in train3d["params"] if p["name"] == "epochs")
    demo_epochs = STAGES["train3d"].defaults("demo")["epochs"]
    assert epochs["defaults"] == {"full": 1000, "tiny": 3, "demo": demo_epochs} and epochs["help"] and train3d["gpu"] is True
    result = cli("run", "--stage", "test-sleep", "--set", "steps=2", "--follow", "--json")
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded" and isinstance(job["id"], int)
    assert "[%d test-sleep] succeeded" % job["id"] in result.stderr
    listed = json.loads(cli("jobs", "--json", "--status", "succeeded", "--stage", "test-sleep").stdout)
    assert [j["id"] for j in listed] == [job["id"]]
    assert json.loads(cli("jobs", "--json", "--stage", "convert").stdout) == []
    shown = json.loads(cli("show", str(job["id"]), "--json").stdout)
    loss = shown["metrics"]["loss"]
    assert {k: loss[k] for k in ("value", "step")} == {"value": 0.5, "step": 1} and set(loss) == {"value", "step", "t"}
    # the metric's time is when the job reported it: inside the job's run, not when it was folded
    with Store(workspace / "jobs.db", readonly=True) as store:
        row = store.get_job(job["id"])
    assert row.started_at <= loss["t"] <= row.finished_at, (row.started_at, loss, row.finished_at)
    assert shown["artefacts"] == {"marker": str(workspace / "jobs" / str(job["id"]) / "marker.txt")}
    assert cli("logs", str(job["id"])).stdout.startswith("slept 0.2 s")
    assert cli("show", "999", check=False).returncode == 1
    plain = cli("jobs").stdout.splitlines()
    assert plain[0].split("\t")[:3] == ["id", "stage", "status"] and plain[1].split("\t")[:3] == [str(job["id"]), "test-sleep", "succeeded"]


def test_db_option_reads_another_database_without_changing_it(cli, workspace: Path, tmp_path: Path) -> None:
    job = json.loads(cli("run", "--stage", "test-predict", "--follow", "--json").stdout)
    copy = tmp_path / "jobs.db.example"
    with Store(workspace / "jobs.db") as store:
        store.snapshot(copy)
    before = copy.read_bytes()
    listed = json.loads(cli("--db", str(copy), "jobs", "--json").stdout)
    assert [j["id"] for j in listed] == [job["id"]]
    refused = cli("--db", str(copy), "run", "--stage", "test-sleep", check=False)
    assert refused.returncode == 1 and "read-only" in refused.stderr
    assert copy.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("jobs.db.example")) == ["jobs.db.example"]
    shown = json.loads(cli("--db", str(copy), "show", str(job["id"]), "--json").stdout)
    assert shown["case_predictions"] == 5 and shown["status"] == "succeeded"


def test_predictions_of_a_finished_job_reach_the_store(cli, manager: JobManager) -> None:
    job = json.loads(cli("run", "--stage", "test-predict", "--set", "cases=4", "--follow", "--json").stdout)
    assert json.loads(cli("show", str(job["id"]), "--json").stdout)["case_predictions"] == 4
    cases = manager.store.case_predictions(job["id"])
    assert [c["series_uid"] for c in cases] == [f"1.2.3.{i}" for i in range(4)]
    assert all(len(c["probabilities"]) == 14 for c in cases) and cases[3]["seconds"] == 1.5


def test_cli_and_runner_imports_stay_light(job_env: dict) -> None:
    """No torch or SQLAlchemy for a CLI command; the job process does not even load the store."""
    import subprocess
    import sys

    probe = (
        "import sys, rsna_tui.cli; cli = set(sys.modules); import rsna_tui.jobs.runner; "
        "print(sorted(m for m in ('torch', 'sqlalchemy', 'sqlmodel', 'pydantic') if m in cli))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=job_env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    runner_probe = "import sys, rsna_tui.jobs.runner; print(sorted(m for m in ('sqlite3', 'torch', 'typer') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", runner_probe], env=job_env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
