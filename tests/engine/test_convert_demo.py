"""Stage ``convert`` on the synthetic demo cohort, whose generator knows the truth of every voxel.

The cohort (``demo_cohort_with_defects``) has sagittal, coronal, reversed and multi-frame series
with localizers, the generator's own NIfTI of each segmented series, each aneurysm's true centre
in patient mm, and four series broken the way real downloads are broken.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from engine.context import StageContext
from engine.data.convert import run
from engine.data.geometry import (patient_to_voxel, reorient_to_lps, resample_nearest, slice_geometries,
                                  voxel_to_patient)
from engine.labels import aneurysm_label


@pytest.fixture(scope="module")
def converted(demo_cohort_with_defects: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    ctx = StageContext.for_folder(tmp_path_factory.mktemp("convert_demo") / "ws")
    dataset = str(demo_cohort_with_defects)
    run({"dataset": dataset, "split": "train", "workers": 2, "seed": 0}, ctx)
    test_ctx = StageContext.for_folder(ctx.workspace.root, job_id="test")
    run({"dataset": dataset, "split": "test", "workers": 1, "seed": 0}, test_ctx)
    out = ctx.workspace.converted(dataset, "train")
    return {
        "root": demo_cohort_with_defects, "out": out, "ctx": ctx, "test_ctx": test_ctx,
        "table": pd.read_csv(out / "conversion.csv").astype(object).fillna("").set_index("SeriesInstanceUID"),
        "points": pd.read_csv(out / "localizers_voxel.csv"),
        "series": pd.read_csv(demo_cohort_with_defects / "demo_series.csv").set_index("SeriesInstanceUID"),
        "truth": pd.read_csv(demo_cohort_with_defects / "aneurysms.csv"),
    }


def _kind(row: pd.Series) -> str:
    return "multiframe" if row["multiframe"] else "reversed" if row["reversed"] else row["orientation"]


def test_every_localizer_lands_in_its_aneurysm(converted: dict) -> None:
    truth = converted["truth"][converted["truth"]["split"] == "train"]
    points = converted["points"].merge(truth, on=["SeriesInstanceUID", "SOPInstanceUID", "location"],
                                       suffixes=("", "_true"))
    assert len(points) == len(truth) > 0  # every point placed, none lost
    kinds = set()
    for p in points.itertuples():
        series = converted["series"].loc[p.SeriesInstanceUID]
        kinds.add(_kind(series))
        centre = np.array([p.x_mm_true, p.y_mm_true, p.z_mm_true])
        # The point is the centre projected onto the nearest slice: off by at most half a slice.
        assert np.linalg.norm(np.array([p.x_mm, p.y_mm, p.z_mm]) - centre) <= series["slice_spacing"] / 2 + 0.05
        img = nib.load(converted["out"] / "images" / f"{p.SeriesInstanceUID}_0000.nii.gz")
        voxel_centre = voxel_to_patient(img.affine, (p.i, p.j, p.k))[0]
        assert np.linalg.norm(voxel_centre - centre) <= p.radius_mm  # the voxel is inside the sac
        mask = np.asanyarray(nib.load(converted["out"] / "masks" / f"{p.SeriesInstanceUID}.nii.gz").dataobj)
        assert mask[p.i, p.j, p.k] == aneurysm_label(p.location) == p.label
    assert {"sagittal", "coronal", "reversed", "multiframe"} <= kinds


def test_images_and_vessels_match_the_generators_own_nifti(converted: dict) -> None:
    segmented = [u for u, row in converted["series"].iterrows() if row["segmentation"] and row["split"] == "train"
                 and converted["table"].loc[u, "status"] != "failed"]
    assert segmented
    for uid in segmented:
        ours = nib.load(converted["out"] / "images" / f"{uid}_0000.nii.gz")
        folder = converted["root"] / "segmentations" / uid
        reference = nib.load(folder / f"{uid}.nii")
        on_our_grid = resample_nearest(np.asanyarray(reference.dataobj), reference.affine, ours.shape, ours.affine)
        np.testing.assert_array_equal(np.asanyarray(ours.dataobj), on_our_grid)
        vessels = np.asanyarray(nib.load(converted["out"] / "vessels" / f"{uid}.nii.gz").dataobj)
        expected = np.asanyarray(reorient_to_lps(nib.load(folder / f"{uid}_cowseg.nii")).dataobj)
        np.testing.assert_array_equal(vessels, expected)


def test_broken_series_convert_through_fallbacks_and_say_so(converted: dict) -> None:
    table = converted["table"]
    defects = pd.read_csv(converted["root"] / "defects.csv").set_index("SeriesInstanceUID")["defect"]
    expected = {
        "missing_slice": ("converted_fallback", "resampled", ""),
        "truncated_file": ("converted_fallback", "resampled", "truncated pixel data"),
        "duplicate_position": ("converted_fallback", "instance_order:1_moved", ""),
        "non_image_object": ("converted", "", "no pixel data"),
    }
    assert sorted(defects) == sorted(expected)
    for uid, defect in defects.items():
        status, fallback, note = expected[defect]
        row = table.loc[uid]
        assert (row["status"], row["fallback"]) == (status, fallback), (defect, row["reason"])
        assert note in row["notes"]
    assert set(table["status"]) <= {"converted", "converted_fallback"}  # nothing lost in this cohort


def _sample(img: nib.Nifti1Image, ds: pydicom.Dataset, position: np.ndarray) -> np.ndarray:
    """The converted volume's values at every pixel of a DICOM slice placed at ``position``."""
    geometry = slice_geometries(ds)[0]
    rows, cols = np.mgrid[0:int(ds.Rows), 0:int(ds.Columns)]
    lps = position + cols[..., None] * geometry.col_spacing * geometry.row_dir + \
        rows[..., None] * geometry.row_spacing * geometry.col_dir
    ijk = np.rint(patient_to_voxel(img.affine, lps.reshape(-1, 3))).astype(int)
    return np.asanyarray(img.dataobj)[tuple(ijk.T)].reshape(rows.shape)


def test_duplicate_position_series_puts_every_slice_back_in_its_place(converted: dict) -> None:
    """Every intact slice is where its header says; the one whose position was overwritten with its
    neighbour's is rebuilt in the single gap the other slices leave."""
    uid = pd.read_csv(converted["root"] / "defects.csv").set_index("defect")["SeriesInstanceUID"]["duplicate_position"]
    img = nib.load(converted["out"] / "images" / f"{uid}_0000.nii.gz")
    slices = sorted((pydicom.dcmread(f) for f in (converted["root"] / "series" / uid).iterdir()),
                    key=lambda d: int(d.InstanceNumber))
    positions = np.array([[float(v) for v in d.ImagePositionPatient] for d in slices])
    line = positions[0] + np.arange(len(slices))[:, None] * (positions[-1] - positions[0]) / (len(slices) - 1)
    moved = np.linalg.norm(positions - line, axis=1) > 0.1
    assert moved.sum() == 1
    for ds, position, is_moved in zip(slices, positions, moved):
        place = line[np.flatnonzero(moved)[0]] if is_moved else position
        np.testing.assert_array_equal(_sample(img, ds, place), apply_modality_lut(ds.pixel_array, ds))


def test_test_split_converts_without_labels(converted: dict) -> None:
    ctx = converted["test_ctx"]
    out = ctx.workspace.converted(str(converted["root"]), "test")
    table = pd.read_csv(out / "conversion.csv")
    held_out = converted["series"][converted["series"]["split"] == "test"]
    assert sorted(table["SeriesInstanceUID"]) == sorted(held_out.index)
    assert set(table["status"]) <= {"converted", "converted_fallback"}
    assert "masks" not in ctx.reporter.artefacts and not (out / "masks").exists()
    assert len(pd.read_csv(out / "localizers_voxel.csv")) == 0
