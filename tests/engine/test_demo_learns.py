"""The demo's models learn: a reduced demo pipeline scores well above chance on held-out series.

A change that breaks learning (labels misaligned with crops, a loss that no longer reaches the heads,
augmentation that destroys the sacs, a cohort whose aneurysms vanish) still runs every stage without
an error; only a score on series no stage has seen catches it. This test runs ``rsna-tui pipeline
--profile demo`` (real jobs, subprocesses of a real workspace), reduced: the demo's cohort (60 held-out
series), the demo's 2D training (a shorter one sometimes misses a third of the sacs), train3d of 1,500
iterations (16^3, batch 4), two-epoch fine-tunes and no TTA. Then it checks the ``Aneurysm Present`` AUC
of ``predict`` on the held-out split and the stage-1 coverage there.

The floor is 0.62, not the demo's targets: a model that learned nothing scores 0.5 +- 0.07 on these 60
series, and this reduced run's own spread is not measured yet (the whole demo at seed 0 scores 0.89, see
README). About 6 minutes on 2 idle cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from engine.labels import ANEURYSM_PRESENT
from engine.stage1.held_out_coverage import held_out_coverage
from rsna_tui.cli.report import build_report
from rsna_tui.jobs.manager import JobManager
from rsna_tui.workspace import Workspace

#: Overrides on the demo profile (``stage.key=value``, as ``rsna-tui pipeline --set`` takes them).
REDUCED = ["train3d.epochs=75", "finetune1.epochs=2", "finetune2.epochs=2", "predict.tta=1",
           "predict.save_segmentations=false"]
AP_AUC_FLOOR = 0.62
MIN_HELD_OUT = 20


@pytest.mark.timeout(1500)  # a shared, loaded 2-core machine can take three times as long as an idle one
def test_reduced_demo_beats_chance_on_held_out_series(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    command = [sys.executable, "-m", "rsna_tui", "-w", str(root), "pipeline", "--dataset", "demo", "--profile",
               "demo", *(f"--set={item}" for item in REDUCED), "--follow"]
    env = {**os.environ, "RSNA_TUI_GPU_SLOTS": "2"}  # as `make demo`: the two fine-tunes side by side
    result = subprocess.run(command, capture_output=True, text=True, timeout=1450, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    workspace = Workspace(root)
    manager = JobManager(workspace)
    predict = manager.store.list_jobs(status="succeeded", stage="predict", limit=1)[0].id
    train3d = manager.store.list_jobs(status="succeeded", stage="train3d", limit=1)[0].id

    metrics = json.loads(Path(manager.store.artefacts(predict)["metrics"]).read_text())
    truth = pd.read_csv(workspace.layout.dataset("demo") / "test_truth.csv")
    assert metrics["n_series"] == len(truth) >= MIN_HELD_OUT
    assert set(truth["Modality"]) == {"CTA", "MRA", "MRI T2", "MRI T1post"}
    assert truth[ANEURYSM_PRESENT].between(0, 1).all() and 0 < truth[ANEURYSM_PRESENT].mean() < 1
    assert metrics["auc"][ANEURYSM_PRESENT] >= AP_AUC_FLOOR, metrics["auc"]

    coverage = held_out_coverage(Path(manager.store.artefacts(predict)["review"]),
                                 workspace.layout.dataset("demo") / "aneurysms.csv")
    assert coverage.points > 0 and coverage.fraction >= 0.9, coverage
    curve = manager.store.metric_series(train3d, "train_loss")
    assert len(curve) == 75 and curve[-1][1] < curve[0][1]  # the loss went somewhere

    report = build_report(manager)  # what `make demo` prints at the end
    assert report["predict_job"] == predict and report["series"] == len(truth)
    assert report["ap_auc"] == pytest.approx(metrics["auc"][ANEURYSM_PRESENT])
    assert report["coverage"]["test"]["fraction"] == pytest.approx(coverage.fraction)
    assert {"demo-data", "convert", "train2d", "roi", "train3d", "predict"} <= set(report["minutes"])
