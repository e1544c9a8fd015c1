"""``rsna-tui export-kaggle`` (issue 15): models named by job id (through the store's artefacts) or
folder, and a folder whose notebook script, run on its own in a subprocess, predicts series.

The jobs are real store rows whose events (a ``model`` artefact, ``finished``) are folded as the manager
folds a finished job; their models are ``engine.inference.synthetic`` folders with training leftovers
beside them (logs, other checkpoints) that the export must leave out.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from engine.inference.synthetic import write_stage2_model, write_threshold_stage1_model
from engine.labels import LABEL_COLUMNS
from rsna_tui.jobs.events import EventWriter
from rsna_tui.jobs.fold import fold_job
from rsna_tui.jobs.store import JobRow, Store

REPO = Path(__file__).resolve().parents[2]
KEY = "SeriesInstanceUID"


def finished_job(store: Store, workspace: Path, stage: str, model: Path, status: str = "succeeded") -> int:
    job = store.insert_job(JobRow(id=0, stage=stage, profile="tiny", params={}, status="running",
                                  created_at=time.time()))
    job_dir = workspace / "jobs" / str(job.id)
    job_dir.mkdir(parents=True)
    writer = EventWriter(job_dir / "events.jsonl")
    writer.emit("artefact", name="model", path=str(model))
    writer.emit("finished", status=status, exit_code=0 if status == "succeeded" else 1)
    writer.close()
    fold_job(store, job.id, job_dir)
    return job.id


@pytest.fixture
def trained(workspace: Path) -> dict[str, object]:
    """A workspace with train2d, finetune1 and finetune2 jobs whose models are in their results folders."""
    results = workspace / "nnUNet_results"
    stage1 = write_threshold_stage1_model(results / "d101", patch=(32, 32), spacing=(4.0, 4.0))
    fine = [write_stage2_model(results / f"d201_{i}", [4, 8, 16, 32], [1, 1, 1, 1], 32, seed=i, fold=i - 1)
            for i in (1, 2)]
    for folder in (stage1, *fine):  # what training leaves besides the model
        fold = next(folder.glob("fold_*"))
        (fold / "checkpoint_latest.pth").write_bytes(b"x" * 1000)
        (fold / "training_log.txt").write_text("epoch 0\n")
    with Store(workspace / "jobs.db") as store:
        ids = {"train2d": finished_job(store, workspace, "train2d", stage1),
               "finetune1": finished_job(store, workspace, "finetune1", fine[0]),
               "finetune2": finished_job(store, workspace, "finetune2", fine[1]),
               "failed": finished_job(store, workspace, "finetune1", fine[1], status="failed")}
    return {"ids": ids, "stage1": stage1, "fine": fine}


def rsna_tui(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rsna_tui", "--workspace", str(workspace), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_export_by_job_ids_then_the_notebook_predicts_on_its_own(trained: dict, workspace: Path, demo_cohort: Path,
                                                                   tmp_path: Path) -> None:
    ids = trained["ids"]
    out = tmp_path / "upload"
    done = rsna_tui(workspace, "export-kaggle", "--stage1-model", str(ids["train2d"]),
                    "--models", f"{ids['finetune1']},{ids['finetune2']}", "--tta", "1", "--json", str(out))
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["folder"] == str(out.resolve()) and manifest["tta"] == 1
    assert [s["origin"] for s in manifest["sources"]] == [f"job {ids['train2d']} (train2d)",
                                                          f"job {ids['finetune1']} (finetune1)",
                                                          f"job {ids['finetune2']} (finetune2)"]
    assert (out / manifest["stage1_model"] / "fold_0" / "checkpoint_final.pth").is_file()
    assert len(manifest["models"]) == 2 and all((out / m / "network.json").is_file() for m in manifest["models"])
    assert not list(out.rglob("checkpoint_latest.pth")) and not list(out.rglob("training_log.txt"))
    requirements = (out / "requirements.txt").read_text().splitlines()
    pinned = dict(r.split("==") for r in requirements if not r.startswith("#"))
    assert {"nnunetv2", "acvl-utils", "dicom2nifti", "pydicom"} <= set(pinned)  # dependencies included
    assert not {"torch", "torchvision"} & set(pinned)  # the notebook keeps Kaggle's CUDA torch
    assert manifest["versions"]["nnunetv2"] == pinned["nnunetv2"]
    assert (out / "code" / "engine" / "inference" / "kaggle.py").is_file()
    assert not list((out / "code").rglob("__pycache__"))
    assert "rsna_tui" not in (out / "notebook.py").read_text().replace("rsna-tui", "")

    # the notebook, run from elsewhere on the folder alone: no PYTHONPATH to this checkout
    series, share = demo_cohort / "test" / "series", tmp_path / "kaggle" / "shared"
    submission = tmp_path / "working" / "submission.csv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(RSNA_TUI_KAGGLE_SERIES=str(series), RSNA_TUI_KAGGLE_SHARED=str(share),
               RSNA_TUI_KAGGLE_SUBMISSION=str(submission), RSNA_TUI_DEVICE="cpu")
    ran = subprocess.run([sys.executable, str(out / "notebook.py")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"engine from {out.resolve() / 'code'}" in ran.stdout
    table = pd.read_csv(submission, dtype={KEY: str})
    assert list(table.columns) == [KEY, *LABEL_COLUMNS]
    assert sorted(table[KEY]) == sorted(p.name for p in series.iterdir())
    assert ((table[list(LABEL_COLUMNS)] > 0) & (table[list(LABEL_COLUMNS)] < 1)).all().all()
    assert not any(share.iterdir())


def test_export_defaults_folders_and_clear_refusals(trained: dict, workspace: Path, tmp_path: Path) -> None:
    ids = trained["ids"]
    done = rsna_tui(workspace, "export-kaggle", "--json", str(tmp_path / "latest"))
    assert done.returncode == 0, done.stderr
    origins = [s["origin"] for s in json.loads(done.stdout)["sources"]]
    assert origins == [f"job {ids['train2d']} (train2d)", f"job {ids['finetune1']} (finetune1)",
                       f"job {ids['finetune2']} (finetune2)"]  # the failed finetune1 is not the latest model

    by_folder = rsna_tui(workspace, "export-kaggle", "--stage1-model", str(trained["stage1"]),
                         "--models", str(trained["fine"][0]), str(tmp_path / "folders"))
    assert by_folder.returncode == 0, by_folder.stderr
    assert "stage2_1" in by_folder.stdout and str(trained["fine"][0]) in by_folder.stdout

    refused = {
        "failed job": (["--models", str(ids["failed"])], f"job {ids['failed']} is a failed finetune1 job"),
        "wrong stage": (["--stage1-model", str(ids["finetune1"])], "expected a succeeded train2d job"),
        "no job": (["--models", "99"], "no job 99"),
        "no folder": (["--models", str(tmp_path / "nowhere")], "neither a job id"),
        "not empty": ([], "exists and is not empty"),
    }
    for case, (args, message) in refused.items():
        target = tmp_path / ("latest" if case == "not empty" else f"refused_{case.replace(' ', '_')}")
        result = rsna_tui(workspace, "export-kaggle", *args, str(target))
        assert result.returncode == 1 and message in result.stderr, (case, result.stderr)
        assert "Traceback" not in result.stderr
        if case != "not empty":
            assert not target.exists() and not list(tmp_path.glob(".refused_*"))
