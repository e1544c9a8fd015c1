"""A real ``predict`` job through the CLI (issue 15): its ``predictions.csv`` is the submission file, and
the store takes each case's seconds and error from the job's per-case table (``cases.csv``).

The job runs the real stage in its own process on the demo cohort's held-out DICOM series plus an empty
series folder, with the untrained model folders of ``engine.inference.synthetic``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from engine.inference.synthetic import write_stage2_model, write_threshold_stage1_model
from engine.labels import LABEL_COLUMNS
from engine.metrics import evaluate
from rsna_tui.jobs.manager import JobManager

KEY = "SeriesInstanceUID"


def test_predict_job_writes_the_submission_and_the_store_reads_the_case_table(
        cli, manager: JobManager, demo_cohort: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    stage1 = write_threshold_stage1_model(models / "s1", patch=(32, 32), spacing=(4.0, 4.0))
    stage2 = write_stage2_model(models / "f1", [4, 8, 16, 32], [1, 1, 1, 1], 32, seed=1, fold=0)
    incoming = tmp_path / "incoming"
    shutil.copytree(demo_cohort / "test" / "series", incoming)
    (incoming / "empty_series").mkdir()

    settings = {"dataset": str(incoming), "models": str(stage2), "stage1_model": str(stage1), "device": "cpu",
                "tta": "1", "save_segmentations": "false"}
    args = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
    job = json.loads(cli("run", "--stage", "predict", *args, "--follow", "--json", timeout=300).stdout)
    assert job["status"] == "succeeded", job

    artefacts = manager.store.artefacts(job["id"])
    table = pd.read_csv(artefacts["predictions"], dtype={KEY: str})
    assert list(table.columns) == [KEY, *LABEL_COLUMNS]
    uids = sorted(p.name for p in incoming.iterdir())
    assert sorted(table[KEY]) == uids
    truth = pd.DataFrame({KEY: uids, **{c: [i % 2 for i in range(len(uids))] for c in LABEL_COLUMNS}})
    assert 0 <= evaluate(table, truth)["score"] <= 1  # the metric scores the file as written

    cases = {c["series_uid"]: c for c in manager.store.case_predictions(job["id"])}
    assert sorted(cases) == uids
    assert cases["empty_series"]["error"].startswith("empty: ") and cases["empty_series"]["seconds"] is not None
    ok = [c for uid, c in cases.items() if uid != "empty_series"]
    assert all(c["error"] is None and c["seconds"] > 0 for c in ok)
    assert all(len(c["probabilities"]) == 14 for c in cases.values())
