"""Stage ``predict`` (issue 7): demo held-out split end to end, review files, the score, and a batch
that goes on past empty and corrupt series.

Models are ``engine.inference.synthetic`` folders handed to the stage as paths, as the planner does
with the artefacts of the train2d / finetune1 / finetune2 jobs; what is tested here is the stage's
wiring, not model quality.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from engine.context import StageContext
from engine.inference import Predictor, run
from engine.inference.stage import score, stage2_models
from engine.inference.synthetic import write_stage2_model, write_threshold_stage1_model
from engine.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, VESSELS
from engine.metrics import EvaluationError, evaluate
from engine.metrics import run as evaluate_stage
from engine.stages import get_stage


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """(Untrained) stage-1, finetune1 and finetune2 model folders."""
    root = tmp_path_factory.mktemp("predict_models")
    return {"s1": write_threshold_stage1_model(root / "s1", patch=(32, 32), spacing=(4.0, 4.0)),
            "f1": write_stage2_model(root / "f1", [4, 8, 16, 32], [1, 1, 1, 1], 32, seed=1, fold=0),
            "f2": write_stage2_model(root / "f2", [4, 8, 16, 32], [1, 1, 1, 1], 32, seed=2, fold=1)}


@pytest.fixture(scope="module")
def trained_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("predict_ws") / "ws"


def params(trained: dict[str, Path], **overrides: object) -> dict:
    """predict's tiny parameters with the model paths the planner would fill in."""
    return get_stage("predict").resolve("tiny", {"device": "cpu", "stage1_model": str(trained["s1"]),
                                                 "models": f"{trained['f1']},{trained['f2']}", **overrides})


def test_predict_demo_test_split_then_evaluate(trained_workspace: Path, models: dict, demo_cohort: Path) -> None:
    ctx = StageContext.for_folder(trained_workspace, job_id="7")
    run(params(models, dataset=str(demo_cohort), split="test", save_segmentations=True), ctx)
    reporter = ctx.reporter
    logs = "\n".join(e["message"] for e in reporter.of_type("log"))
    assert "2 model(s)" in logs and "8 view(s)" in logs

    out = trained_workspace / "predictions" / "7"
    table = pd.read_csv(reporter.artefacts["predictions"], dtype={"SeriesInstanceUID": str})
    assert Path(reporter.artefacts["predictions"]) == out / "predictions.csv"
    assert list(table.columns) == ["SeriesInstanceUID", *LABEL_COLUMNS]  # exactly the submission format
    truth = pd.read_csv(demo_cohort / "test_truth.csv", dtype={"SeriesInstanceUID": str})
    assert sorted(table["SeriesInstanceUID"]) == sorted(truth["SeriesInstanceUID"])
    case_table = pd.read_csv(reporter.artefacts["cases"], dtype={"SeriesInstanceUID": str}, keep_default_na=False)
    assert Path(reporter.artefacts["cases"]) == out / "cases.csv"
    assert sorted(case_table["SeriesInstanceUID"]) == sorted(truth["SeriesInstanceUID"])
    assert (case_table["status"] == "ok").all() and (case_table["seconds"] > 0).all()
    assert (case_table["slice_gap"] == "").all()
    # every row is what the two-model predictor gives that series on its own (columns in order)
    reference = Predictor(models["s1"], [models["f1"], models["f2"]], tta=8, device="cpu", segmentations=True)
    expected = {uid: reference.predict_series(demo_cohort / "test" / "series" / uid)
                for uid in table["SeriesInstanceUID"]}
    for row in table.itertuples(index=False):
        np.testing.assert_allclose(np.asarray(row[1:15], dtype=float), expected[row.SeriesInstanceUID].probabilities,
                                   rtol=0, atol=1e-6)
    assert reporter.artefacts["truth"] == str(demo_cohort / "test_truth.csv")

    # review files: box, probabilities, and both decoders' maps placed in the volume's LPS space
    cases = Path(reporter.artefacts["review"])
    uid = table["SeriesInstanceUID"].iloc[0]
    case = json.loads((cases / uid / "case.json").read_text())
    assert case["status"] == "ok" and case["probabilities"][ANEURYSM_PRESENT] == pytest.approx(
        table.set_index("SeriesInstanceUID").loc[uid, ANEURYSM_PRESENT], abs=1e-9)
    box, shape = case["box"], case["shape_zyx"]
    (z, y, x) = (expected[uid].boxes[0].z, expected[uid].boxes[0].y, expected[uid].boxes[0].x)
    assert (box["z0"], box["z1"], box["y0"], box["y1"], box["x0"], box["x1"]) == (*z, *y, *x)
    assert shape == list(expected[uid].shape) and (z[1] - z[0]) * (y[1] - y[0]) * (x[1] - x[0]) < np.prod(shape)
    seg1 = nib.load(cases / uid / "seg1.nii.gz")
    seg2 = nib.load(cases / uid / "seg2.nii.gz")
    assert seg1.shape == seg2.shape == (32, 32, 32) and seg1.get_data_dtype() == np.uint8
    # the review maps are the predictor's arg-max maps, (z, y, x) written as NIfTI (x, y, z)
    maps = expected[uid].segmentations
    np.testing.assert_array_equal(np.asarray(seg1.dataobj).transpose(2, 1, 0), maps.seg1.astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(seg2.dataobj).transpose(2, 1, 0), maps.seg2.astype(np.uint8))
    assert len(np.unique(maps.seg1)) > 1 and np.asarray(seg1.dataobj).max() <= len(VESSELS) + 1
    # the first and last review voxels sit on the first and last voxel of the crop in the original volume
    volume_affine = np.asarray(case["affine_lps"])
    corners = {(0, 0, 0): (box["x0"], box["y0"], box["z0"]), (31, 31, 31): (box["x1"] - 1, box["y1"] - 1, box["z1"] - 1)}
    for index, voxel in corners.items():  # NIfTI stores the sform in float32: 1e-4 mm, far below a voxel
        np.testing.assert_allclose(seg1.affine @ [*index, 1], volume_affine @ [*voxel, 1], atol=1e-4)

    # the score: three held-out series leave location columns with one class, which is logged, not fatal
    aucs = {e["name"]: e["value"] for e in reporter.of_type("metric") if e["name"].startswith("auc/")}
    expected = roc_auc_score(truth.set_index("SeriesInstanceUID")[ANEURYSM_PRESENT],
                             table.set_index("SeriesInstanceUID").loc[truth["SeriesInstanceUID"], ANEURYSM_PRESENT])
    assert aucs[f"auc/{ANEURYSM_PRESENT}"] == pytest.approx(expected)
    single = [c for c in LABEL_COLUMNS if truth[c].nunique() < 2]
    assert single and "no score" in logs and single[0] in logs
    assert not reporter.metrics("score")
    # ... and the evaluate stage, given the same files, names such a column instead of scoring
    with pytest.raises(EvaluationError, match="only"):
        evaluate_stage({"predictions": reporter.artefacts["predictions"], "truth": reporter.artefacts["truth"]},
                       StageContext.for_folder(trained_workspace, job_id="8"))


def test_score_when_every_column_has_both_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    uids = [f"1.2.{i}" for i in range(6)]
    truth = pd.DataFrame({"SeriesInstanceUID": uids, **{c: [0, 1] * 3 for c in LABEL_COLUMNS}})
    predictions = pd.DataFrame({"SeriesInstanceUID": uids[::-1], **{c: rng.random(6) for c in LABEL_COLUMNS}})
    truth.to_csv(tmp_path / "truth.csv", index=False)
    ctx = StageContext.for_folder(tmp_path / "ws")
    score(predictions, tmp_path / "truth.csv", tmp_path, ctx)
    assert ctx.reporter.metrics("score") == [pytest.approx(evaluate(predictions, truth)["score"])]
    assert json.loads((tmp_path / "metrics.json").read_text())["n_series"] == 6


def test_batch_goes_on_past_empty_and_corrupt_series(trained_workspace: Path, models: dict, demo_cohort: Path,
                                                     tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    good = sorted((demo_cohort / "test" / "series").iterdir())[0]
    shutil.copytree(good, folder / good.name)
    (folder / "empty_series").mkdir()
    (folder / "garbage").mkdir()
    (folder / "garbage" / "1.dcm").write_bytes(b"not a dicom file" * 10)
    (folder / "two_slices").mkdir()
    for source in sorted(good.iterdir())[:2]:
        shutil.copy(source, folder / "two_slices" / source.name)
    (folder / "volume_0000.nii.gz").write_bytes(b"\x1f\x8b truncated gzip")

    ctx = StageContext.for_folder(trained_workspace, job_id="9")
    run(params(models, dataset=str(folder), save_segmentations=False, models=str(models["f1"])), ctx)
    table = pd.read_csv(ctx.reporter.artefacts["predictions"], dtype={"SeriesInstanceUID": str},
                        keep_default_na=False).set_index("SeriesInstanceUID")
    assert sorted(table.index) == sorted([good.name, "empty_series", "garbage", "two_slices", "volume"])
    assert list(table.columns) == list(LABEL_COLUMNS)
    assert not np.allclose(table.loc[good.name, list(LABEL_COLUMNS)].to_numpy(float), 0.5)
    cases = pd.read_csv(ctx.reporter.artefacts["cases"], dtype={"SeriesInstanceUID": str},
                        keep_default_na=False).set_index("SeriesInstanceUID")
    assert cases.loc[good.name, "status"] == "ok" and cases.loc[good.name, "reason"] == ""
    for uid in ("empty_series", "garbage", "two_slices", "volume"):
        assert (table.loc[uid, list(LABEL_COLUMNS)].to_numpy(float) == 0.5).all()
        assert cases.loc[uid, "reason"]
    assert cases.loc["empty_series", "status"] == "empty"
    assert cases.loc["garbage", "status"] == "empty" and "left out" in cases.loc["garbage", "reason"]
    assert cases.loc["two_slices", "status"] == "failed" and cases.loc["volume", "status"] == "failed"
    assert ctx.reporter.metrics("series_failed") == [2.0] and ctx.reporter.metrics("series_empty") == [2.0]
    assert "truth" not in ctx.reporter.artefacts
    assert "1 model(s)" in "\n".join(e["message"] for e in ctx.reporter.of_type("log"))


def test_models_are_paths_and_a_stage_name_says_how_to_plan_it(tmp_path: Path) -> None:
    model = write_stage2_model(tmp_path / "f1", [4, 8], [1, 1], 8, seed=0)
    assert stage2_models(f" {model} ,") == [model]
    for given in ("", "finetune1,finetune2", "5"):  # what reaches a stage started without the planner
        with pytest.raises(FileNotFoundError, match="rsna-tui run"):
            stage2_models(given)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        stage2_models(f"{model},{tmp_path / 'nope'}")
