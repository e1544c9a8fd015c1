"""The demo's models learn: a reduced demo pipeline scores well above chance on held-out series.

A change that breaks learning (labels misaligned with crops, a loss that no longer reaches the heads,
augmentation that destroys the sacs, a cohort whose aneurysms vanish) still runs every stage without
an error; only a score on series no stage has seen catches it. This test runs the demo profile's
stages as real jobs (subprocesses of a real workspace), reduced: a smaller cohort (held-out split
of >= 20 series), shorter trainings, one stage-2 model (train3d, 500 iterations) and no TTA, then
checks the ``Aneurysm Present`` AUC of ``predict`` on the held-out split and the stage-1 coverage
there. About 5 minutes on 2 idle cores (estimated from CPU seconds; it was measured on a loaded one).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from engine.labels import ANEURYSM_PRESENT
from engine.stage1.held_out_coverage import held_out_coverage
from rsna_tui.cli.report import build_report
from rsna_tui.jobs.manager import JobManager
from rsna_tui.workspace import Workspace

PROFILE = "demo"
#: (stage, overrides on the demo profile) in pipeline order; the last two steps use job ids.
REDUCED = [
    ("demo-data", {"n": 120, "test_fraction": 0.25, "seed": 3}),
    ("convert", {"split": "train"}),
    ("convert", {"split": "test"}),
    ("stage1-data", {}),
    ("train2d", {"epochs": 5, "iterations": 20}),
    ("roi", {"split": "train"}),
    ("roi", {"split": "test"}),
    ("train3d", {"epochs": 25, "iterations": 20}),
]
AP_AUC_FLOOR = 0.75
MIN_HELD_OUT = 20


def _wait(manager: JobManager, job_ids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        manager.refresh()
        manager.schedule()
        jobs = [manager.job(j) for j in job_ids]
        if all(j.terminal for j in jobs):
            failed = [j for j in jobs if j.status != "succeeded"]
            log = manager.job_dir(failed[0]).joinpath("log.txt").read_text()[-3000:] if failed else ""
            assert not failed, f"job {failed[0].id} ({failed[0].stage}) {failed[0].status}: {failed[0].error}\n{log}"
            return
        time.sleep(1.0)
    pytest.fail(f"reduced demo did not finish within {timeout_s:.0f} s")


@pytest.mark.timeout(1500)  # minutes on a shared, loaded 2-core machine; about 5 on an idle one
@pytest.mark.xfail(reason="issue 13 open: at this budget stage 2 does not learn presence yet (held-out AP AUC "
                          "0.43 on 31 series when this test was written); remove the mark once it passes",
                   strict=False)
def test_reduced_demo_beats_chance_on_held_out_series(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    workspace.ensure_root()
    manager = JobManager(workspace)
    jobs = []
    for stage, overrides in REDUCED:
        jobs.append(manager.submit(stage, PROFILE, overrides, [jobs[-1]] if jobs else []).id)
    predict = manager.submit("predict", PROFILE, {"split": "test", "models": str(jobs[-1]), "tta": 1,
                                                  "save_segmentations": False}, [jobs[-1]]).id
    try:
        _wait(manager, [*jobs, predict], timeout_s=1450)
    finally:  # a failed or timed-out run leaves no job running behind the test
        for job_id in [*jobs, predict]:
            if not manager.job(job_id).terminal:
                manager.cancel(job_id)

    metrics = json.loads(Path(manager.store.artefacts(predict)["metrics"]).read_text())
    truth = pd.read_csv(workspace.layout.dataset("demo") / "test_truth.csv")
    assert metrics["n_series"] == len(truth) >= MIN_HELD_OUT
    assert set(truth["Modality"]) == {"CTA", "MRA", "MRI T2", "MRI T1post"}
    assert truth[ANEURYSM_PRESENT].between(0, 1).all() and 0 < truth[ANEURYSM_PRESENT].mean() < 1
    assert metrics["auc"][ANEURYSM_PRESENT] >= AP_AUC_FLOOR, metrics["auc"]

    coverage = held_out_coverage(workspace.layout, "demo")
    assert coverage.points > 0 and coverage.fraction >= 0.9, coverage
    curve = manager.store.metric_series(jobs[-1], "train_loss")
    assert len(curve) == 25 and curve[-1][1] < curve[0][1]  # the loss went somewhere

    report = build_report(manager)  # what `make demo` prints at the end
    assert report["predict_job"] == predict and report["series"] == len(truth)
    assert report["ap_auc"] == pytest.approx(metrics["auc"][ANEURYSM_PRESENT])
    assert report["coverage"]["test"]["fraction"] == pytest.approx(coverage.fraction)
    assert set(report["minutes"]) == {stage for stage, _ in REDUCED} | {"predict"}
