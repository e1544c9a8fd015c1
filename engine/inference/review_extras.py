"""Review files beyond ``engine.inference.review``: the converted volume and the truth localizer points.

The review screen shows the **converted volume** (not only the network's crop) with the maps and the
true aneurysm points over it, so a ``predict`` job with review files (``save_segmentations``) also
writes, per case folder:

* ``volume.nii``: the reviewed time point's volume exactly as predict converted it (axis codes L, P, S,
  the affine of ``case.json``'s ``affine_lps``), int16 when that is lossless (DICOM pixels after
  rescale almost always are), else float32. Uncompressed on purpose: a 512 x 512 x 120 MR opens by
  memory map in milliseconds, where gzip costs about a second per open; ~2 bytes per voxel on disk.
* ``localizers.csv``: the split's localizer rows of this series (``train_localizers.csv`` /
  ``test_localizers.csv``) placed in that volume, in the columns of the convert stage's
  ``localizers_voxel.csv`` (``engine.data.localizers.VOXEL_COLUMNS``: LPS mm and voxel i, j, k in
  NIfTI array order) plus ``issue`` for a point that could not be placed. Predict converts series
  itself, so the points are placed here through the DICOM geometry of their own slice (the same
  ``locate`` as convert), which needs no convert job.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom

from engine.data.geometry import GeometryError, SliceGeometry, slice_geometries
from engine.data.kaggle import KaggleDataset, KaggleSchemaError, Localizer
from engine.data.localizers import VOXEL_COLUMNS, locate
from engine.inference.predictor import SeriesPrediction

VOLUME_FILE = "volume.nii"
LOCALIZERS_FILE = "localizers.csv"
LOCALIZER_COLUMNS = (*VOXEL_COLUMNS, "issue")
INT16 = np.iinfo(np.int16)


def split_localizers(root: Path, split: str, log: Callable[[str], None]) -> dict[str, list[Localizer]]:
    """The split's localizer points by series; empty when the folder is no Kaggle layout or has none,
    or when the table cannot be read (``log`` says why: predict goes on without truth points)."""
    try:
        data = KaggleDataset.open(root, split)
    except (KaggleSchemaError, FileNotFoundError):
        return {}
    try:
        points = data.read_localizers()
    except (KaggleSchemaError, OSError, ValueError) as exc:
        log(f"no truth points in the review files: {exc}")
        return {}
    by_series: dict[str, list[Localizer]] = {}
    for point in points or []:
        by_series.setdefault(point.series_uid, []).append(point)
    return by_series


def _geometries_of(series_dir: Path, sop_uid: str) -> list[SliceGeometry] | None:
    """Frame geometries of the slice ``sop_uid``: ``<sop>.dcm`` (the Kaggle layout), else the folder's
    file whose SOPInstanceUID matches; None when no file is that slice."""
    named = series_dir / f"{sop_uid}.dcm"
    candidates = [named] if named.is_file() else sorted(p for p in series_dir.rglob("*") if p.is_file())
    for path in candidates:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM: the conversion already reported it
            continue
        if str(ds.get("SOPInstanceUID", "")) == sop_uid:
            return slice_geometries(ds)
    return None


def place_points(points: list[Localizer], series_dir: Path, prediction: SeriesPrediction) -> pd.DataFrame:
    """Each point in the predicted volume (one row per point, ``issue`` set when it cannot be placed)."""
    rows = []
    shape_xyz = tuple(reversed(prediction.shape)) if prediction.shape else None
    for point in points:
        row = {c: "" for c in LOCALIZER_COLUMNS}
        row.update(SeriesInstanceUID=point.series_uid, SOPInstanceUID=point.sop_uid, location=point.location,
                   label=point.label)
        try:
            if prediction.affine is None or shape_xyz is None:
                raise ValueError("the series was not converted")
            frames = _geometries_of(series_dir, point.sop_uid)
            if frames is None:
                raise ValueError(f"no file of {series_dir} has SOPInstanceUID {point.sop_uid}")
            row.update(locate(point, {point.sop_uid: frames}, prediction.affine, shape_xyz).row())
        except (ValueError, GeometryError, OSError) as exc:
            row["issue"] = " ".join(str(exc).split())
        rows.append(row)
    return pd.DataFrame(rows, columns=list(LOCALIZER_COLUMNS))


def save_volume(volume_zyx: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """The (z, y, x) volume as an uncompressed LPS NIfTI, int16 when no value changes by it."""
    data = np.ascontiguousarray(volume_zyx.transpose(2, 1, 0))
    if data.size and INT16.min <= data.min() and data.max() <= INT16.max and np.array_equal(np.rint(data), data):
        data = data.astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    partial = path.with_name(f".{path.name}.partial.nii")
    nib.save(img, str(partial))
    os.replace(partial, path)


def write_review_extras(folder: Path, prediction: SeriesPrediction, source: Path,
                        points: list[Localizer]) -> None:
    """Write ``volume.nii`` (when the prediction kept its volume) and ``localizers.csv`` (when the
    series has truth points) into the case folder; then drop the volume from memory."""
    if prediction.volume is not None and prediction.affine is not None:
        save_volume(prediction.volume, prediction.affine, folder / VOLUME_FILE)
        prediction.volume = None
    if points:
        table = place_points(points, source, prediction)
        path = folder / LOCALIZERS_FILE
        partial = path.with_name(f".{path.name}.partial")
        table.to_csv(partial, index=False)
        os.replace(partial, path)
