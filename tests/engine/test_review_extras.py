"""``engine.inference.review_extras``: truth points placed from the DICOM of their own slice, points that
cannot be placed, a broken localizer table, and the saved volume's type."""
from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from engine.inference.predictor import SeriesPrediction
from engine.inference.review_extras import place_points, save_volume, split_localizers
from engine.inference.series import load

KEY = "SeriesInstanceUID"


def prediction_of(folder: Path) -> SeriesPrediction:
    series = load(folder)
    result = SeriesPrediction(folder.name, str(folder), np.zeros(14))
    result.shape, result.affine = tuple(series.volumes[0].shape), series.affine
    return result


def test_points_are_placed_like_convert_places_them(demo_cohort: Path) -> None:
    logs: list[str] = []
    points = split_localizers(demo_cohort, "train", logs.append)
    table = pd.read_csv(demo_cohort / "train_localizers.csv", dtype=str)
    assert sum(len(p) for p in points.values()) == len(table) and not logs
    assert split_localizers(demo_cohort, "test", logs.append) == {}  # the demo's held-out split has none
    uid = next(u for u in points if len(points[u]) > 1)
    placed = place_points(points[uid], demo_cohort / "series" / uid, prediction_of(demo_cohort / "series" / uid))
    assert (placed["issue"] == "").all() and len(placed) == len(points[uid])
    shape = prediction_of(demo_cohort / "series" / uid).shape[::-1]
    for axis, column in enumerate("ijk"):
        assert placed[column].between(0, shape[axis] - 1).all()


def test_unplaceable_points_and_a_broken_table(demo_cohort: Path, tmp_path: Path) -> None:
    points = split_localizers(demo_cohort, "train", print)
    uid = next(iter(points))
    folder = tmp_path / "series"
    shutil.copytree(demo_cohort / "series" / uid, folder)
    (folder / f"{points[uid][0].sop_uid}.dcm").unlink()
    placed = place_points(points[uid][:1], folder, prediction_of(folder))
    assert placed["issue"].iloc[0].startswith("no file of") and points[uid][0].sop_uid in placed["issue"].iloc[0]

    broken = tmp_path / "dataset"
    shutil.copytree(demo_cohort, broken)
    table = pd.read_csv(broken / "train_localizers.csv", dtype=str)
    table.loc[0, "location"] = "Nowhere Artery"
    table.to_csv(broken / "train_localizers.csv", index=False)
    logs: list[str] = []
    assert split_localizers(broken, "train", logs.append) == {}
    assert len(logs) == 1 and "Nowhere Artery" in logs[0]


def test_volume_is_int16_only_when_lossless(tmp_path: Path) -> None:
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    whole = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 1024
    save_volume(whole, affine, tmp_path / "a.nii")
    saved = nib.load(tmp_path / "a.nii")
    assert saved.get_data_dtype() == np.int16 and saved.shape == (4, 3, 2)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), whole.transpose(2, 1, 0))
    save_volume(whole + 0.5, affine, tmp_path / "b.nii")
    assert nib.load(tmp_path / "b.nii").get_data_dtype() == np.float32
    np.testing.assert_allclose(nib.load(tmp_path / "b.nii").affine, affine)
