"""Hardening of the engine (issue 15): multi-frame points without a frame index, series with a hole
between slices, and a predictions file that is exactly the submission format.

Real data throughout: the demo cohort's DICOM (its Enhanced multi-frame series and an axial series
rewritten with pydicom into 4 slices with a 200 mm hole), converted by the real ``convert`` stage and
predicted by the real ``predict`` stage with the untrained model folders of ``engine.inference.synthetic``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from engine.context import StageContext
from engine.data.convert import run as convert
from engine.data.dicom_series import load_series
from engine.data.slice_gaps import SliceGaps
from engine.inference import run as predict_stage
from engine.inference.synthetic import write_stage2_model, write_threshold_stage1_model
from engine.labels import LABEL_COLUMNS
from engine.metrics import evaluate
from engine.metrics import run as evaluate_stage
from engine.stages import get_stage

KEY = "SeriesInstanceUID"
HOLE_MM = 200.0


def demo_table(demo: Path) -> pd.DataFrame:
    return pd.read_csv(demo / "demo_series.csv", dtype={KEY: str})


def one_series_dataset(demo: Path, uid: str, root: Path) -> Path:
    """A Kaggle-layout copy of one training series of the demo, with its train.csv and localizer rows."""
    (root / "series").mkdir(parents=True)
    shutil.copytree(demo / "series" / uid, root / "series" / uid)
    for name in ("train.csv", "train_localizers.csv"):
        table = pd.read_csv(demo / name, dtype={KEY: str})
        table[table[KEY] == uid].to_csv(root / name, index=False)
    return root


def gap_series(source: Path, out: Path) -> Path:
    """The first four slices (by position) of an axial series, the last two moved 200 mm further."""
    slices = sorted((pydicom.dcmread(p) for p in source.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
    out.mkdir(parents=True)
    for index, ds in enumerate(slices[:4]):
        if index >= 2:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, round(z + HOLE_MM, 4)]
        ds.save_as(out / f"{ds.SOPInstanceUID}.dcm")
    return out


def axial_uid(demo: Path, split: str = "train") -> str:
    table = demo_table(demo)
    rows = table[(table["split"] == split) & (table["orientation"] == "axial") & (table["multiframe"] == 0)
                 & (table["reversed"] == 0)]
    return rows[KEY].iloc[0]


# -- localizers ------------------------------------------------------------------------------------

def test_multiframe_point_without_frame_index_is_a_localizer_issue(demo_cohort: Path, tmp_path: Path) -> None:
    table = demo_table(demo_cohort)
    uid = table[(table["split"] == "train") & (table["multiframe"] == 1)][KEY].iloc[0]
    root = one_series_dataset(demo_cohort, uid, tmp_path / "first_release")
    localizers = pd.read_csv(root / "train_localizers.csv", dtype=str)
    assert localizers["coordinates"].str.contains("'f'").all()  # the current release's form
    # the competition's first release: the same points without 'f'
    localizers["coordinates"] = localizers["coordinates"].str.replace(r", 'f': \d+", "", regex=True)
    localizers.to_csv(root / "train_localizers.csv", index=False)

    ctx = StageContext.for_folder(tmp_path / "ws")
    convert({"dataset": str(root), "split": "train", "workers": 1, "seed": 0}, ctx)
    out = ctx.workspace.converted(str(root), "train")
    row = pd.read_csv(out / "conversion.csv", dtype={KEY: str}, keep_default_na=False).set_index(KEY).loc[uid]
    assert row["status"].startswith("converted") and "multiframe" in row["fallback"]
    assert row["localizers"] == 0
    issues = row["localizer_issues"].split(" | ")
    assert len(issues) == len(localizers)
    assert all("no frame index 'f'" in issue and "multi-frame" in issue for issue in issues)
    assert pd.read_csv(out / "localizers_voxel.csv").empty  # nothing placed on a guessed frame
    import nibabel as nib
    assert not np.asarray(nib.load(out / "masks" / f"{uid}.nii.gz").dataobj).any()
    logs = "\n".join(e["message"] for e in ctx.reporter.of_type("log"))
    assert f"localizer issue {uid}" in logs and "no frame index" in logs

    # with 'f' (the demo's own table) the same series places every point
    again = StageContext.for_folder(tmp_path / "ws2")
    with_f = one_series_dataset(demo_cohort, uid, tmp_path / "current_release")
    convert({"dataset": str(with_f), "split": "train", "workers": 1, "seed": 0}, again)
    placed = pd.read_csv(again.workspace.converted(str(with_f), "train") / "conversion.csv", keep_default_na=False)
    assert placed["localizers"].tolist() == [len(localizers)] and placed["localizer_issues"].tolist() == [""]


# -- slice gaps ------------------------------------------------------------------------------------

def test_a_hole_between_slices_is_noted_by_convert(demo_cohort: Path, tmp_path: Path) -> None:
    uid = axial_uid(demo_cohort)
    root = tmp_path / "holes"
    gap_series(demo_cohort / "series" / uid, root / "series" / uid)
    shutil.copytree(demo_cohort / "series" / axial_uid(demo_cohort, "train"), root / "series" / "intact")
    spacing = float(demo_table(demo_cohort).set_index(KEY).loc[uid, "slice_spacing"])

    volume = load_series(sorted((root / "series" / uid).iterdir()))
    assert "resampled" in volume.fallbacks
    assert volume.images[0].shape[2] > 20  # 4 slices became an interpolated stack
    assert volume.gaps == SliceGaps(pytest.approx(HOLE_MM + spacing, abs=1e-3), pytest.approx(spacing, abs=1e-3))

    ctx = StageContext.for_folder(tmp_path / "ws")
    params = get_stage("convert").resolve("tiny", {"dataset": str(root), "workers": 1})
    assert params["max_gap_factor"] == 3.0
    convert(params, ctx)
    table = pd.read_csv(ctx.workspace.converted(str(root), "train") / "conversion.csv", dtype={KEY: str},
                        keep_default_na=False).set_index(KEY)
    row = table.loc[uid]
    assert row["status"] == "converted_fallback" and "resampled" in row["fallback"]
    assert row["max_gap_mm"] == pytest.approx(HOLE_MM + spacing, abs=1e-2)
    assert row["median_gap_mm"] == pytest.approx(spacing, abs=1e-2)
    assert "largest slice gap" in row["slice_gap"] and "3x" in row["slice_gap"]
    assert table.loc["intact", "slice_gap"] == ""
    assert table.loc["intact", "max_gap_mm"] == pytest.approx(spacing, abs=1e-2)
    assert ctx.reporter.metrics("series_slice_gap") == [1]
    assert any(f"slice gap {uid}" in e["message"] for e in ctx.reporter.of_type("log"))

    # a looser threshold is a parameter: the rerun converts nothing again and notes nothing
    looser = StageContext.for_folder(tmp_path / "ws")
    convert({**params, "max_gap_factor": 100.0}, looser)
    assert any("converting 0 of 2" in e["message"] for e in looser.reporter.of_type("log"))
    again = pd.read_csv(looser.workspace.converted(str(root), "train") / "conversion.csv", keep_default_na=False)
    assert (again["slice_gap"] == "").all()


# -- predict: the submission file, the per-case table ---------------------------------------------

@pytest.fixture(scope="module")
def model_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    ws = tmp_path_factory.mktemp("hardening") / "ws"
    stage1 = write_threshold_stage1_model(ws / "models" / "s1", patch=(32, 32), spacing=(4.0, 4.0))
    stage2 = [write_stage2_model(ws / "models" / f"f{seed}", [4, 8, 16, 32], [1, 1, 1, 1], 32, seed=seed, fold=seed - 1)
              for seed in (1, 2)]
    return ws, stage1, stage2


def test_predict_writes_the_submission_format_and_marks_gaps_per_case(
        model_workspace: tuple[Path, Path, list[Path]], demo_cohort: Path, tmp_path: Path) -> None:
    ws, stage1, stage2 = model_workspace
    incoming = tmp_path / "incoming"
    test_series = demo_cohort / "test" / "series"
    for folder in sorted(test_series.iterdir()):
        shutil.copytree(folder, incoming / folder.name)
    gapped = axial_uid(demo_cohort)
    gap_series(demo_cohort / "series" / gapped, incoming / gapped)

    ctx = StageContext.for_folder(ws, job_id="15")
    params = get_stage("predict").resolve("tiny", {"dataset": str(incoming), "device": "cpu", "tta": 1,
                                                    "save_segmentations": False, "stage1_model": str(stage1),
                                                    "models": ",".join(map(str, stage2))})
    predict_stage(params, ctx)
    predictions = Path(ctx.reporter.artefacts["predictions"])
    header = predictions.read_text().splitlines()[0].split(",")
    assert len(header) == 15 and header[0] == KEY  # the official metric checks the column count
    table = pd.read_csv(predictions, dtype={KEY: str})
    assert list(table.columns) == [KEY, *LABEL_COLUMNS] and len(table) == 4

    cases = pd.read_csv(ctx.reporter.artefacts["cases"], dtype={KEY: str}, keep_default_na=False).set_index(KEY)
    assert (cases["status"] == "ok").all() and (cases["seconds"] > 0).all()
    assert "largest slice gap" in cases.loc[gapped, "slice_gap"] and "resampled" in cases.loc[gapped, "fallback"]
    assert (cases.drop(index=gapped)["slice_gap"] == "").all()
    assert any(f"series {gapped}: largest slice gap" in e["message"] for e in ctx.reporter.of_type("log"))

    # engine.metrics scores the file as it is: a truth table where every column has both classes
    uids = sorted(table[KEY])
    truth = pd.DataFrame({KEY: uids, **{c: [0, 1, 0, 1] for c in LABEL_COLUMNS}})
    truth.to_csv(tmp_path / "truth.csv", index=False)
    scoring = StageContext.for_folder(ws, job_id="16")
    evaluate_stage({"predictions": str(predictions), "truth": str(tmp_path / "truth.csv")}, scoring)
    expected = evaluate(table, truth)["score"]
    assert scoring.reporter.metrics("score") == [pytest.approx(expected)]
    assert json.loads((scoring.job_dir / "metrics.json").read_text())["n_series"] == 4
