"""Per-case review files of a prediction job: what a person needs to check one series.

``<cases>/<uid>/case.json`` always: status and reason, conversion fallback, time points, the (z, y, x)
shape, spacing and LPS affine of the volume, the stage-1 box of the reviewed time point as half-open
voxel ranges and in mm from the first voxel (all boxes when there are several time points), the 14
probabilities by column name, and the step timings.

With segmentations, three NIfTI files on one "review grid" (the network grid ``size``^3, subsampled by
``factor`` so that its edge is at most :data:`REVIEW_EDGE`): ``seg1.nii.gz`` (decoder 1: 0 background,
1..13 vessels in ``engine.labels.VESSELS`` order, 14 aneurysm), ``seg2.nii.gz`` (decoder 2: vessel k
united with the aneurysm at its location) and ``image.nii.gz`` (the network input, the z-scored crop).
Their affine places them in the patient's LPS space of the original volume: the network grid samples the
crop with ``align_corners=True``, so grid index n on an axis of crop length L lies at voxel
``box_start + n * (L - 1) / (size - 1)`` of the original volume. Any viewer that resamples by affine
(nibabel, ITK-SNAP, 3D Slicer) overlays them on the converted volume directly.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from engine.inference.predictor import SeriesPrediction
from engine.stage1.fusion import Box3D

#: Largest edge of the saved maps (224^3 maps are subsampled by 2 to 112^3).
REVIEW_EDGE = 112
CASE_FILE = "case.json"


def box_record(box: Box3D, spacing: tuple[float, ...] | None) -> dict[str, Any]:
    record: dict[str, Any] = {"fallback": box.fallback}
    for name, (lo, hi), step in zip("zyx", box.ranges, spacing or (1.0, 1.0, 1.0)):
        record.update({f"{name}0": lo, f"{name}1": hi,
                       f"{name}0_mm": round(lo * float(step), 3), f"{name}1_mm": round(hi * float(step), 3)})
    return record


def review_affine(volume_affine: np.ndarray, box: Box3D, size: int, factor: int) -> np.ndarray:
    """Affine of a review-grid map (NIfTI index order x, y, z) in the original volume's LPS space."""
    index_to_voxel = np.eye(4)
    for column, (lo, hi) in zip((2, 1, 0), box.ranges):  # box is (z, y, x); NIfTI column 0 is x
        length = hi - lo
        step = (length - 1) / (size - 1) if size > 1 and length > 1 else 1.0 / max(size, 1)
        index_to_voxel[column, column] = step * factor
        index_to_voxel[column, 3] = lo
    return np.asarray(volume_affine, dtype=np.float64) @ index_to_voxel


def _save_nifti(array_zyx: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(np.ascontiguousarray(array_zyx.transpose(2, 1, 0)), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    partial = path.with_name(f".{path.name}.partial.nii.gz")
    nib.save(img, str(partial))
    os.replace(partial, path)


def write_case(folder: Path, prediction: SeriesPrediction) -> Path:
    """Write one case's review files into ``folder``; returns the ``case.json`` path."""
    folder.mkdir(parents=True, exist_ok=True)
    box = prediction.boxes[prediction.review_timepoint] if prediction.boxes else None
    record: dict[str, Any] = {
        "SeriesInstanceUID": prediction.uid,
        "source": prediction.source,
        "status": prediction.status,
        "reason": prediction.reason,
        "conversion_fallback": prediction.fallback,
        "timepoints": prediction.timepoints,
        "review_timepoint": prediction.review_timepoint,
        "shape_zyx": list(prediction.shape) if prediction.shape else None,
        "spacing_zyx": list(prediction.spacing) if prediction.spacing else None,
        "affine_lps": prediction.affine.tolist() if prediction.affine is not None else None,
        "box": box_record(box, prediction.spacing) if box else None,
        "boxes": [box_record(b, prediction.spacing) for b in prediction.boxes],
        "probabilities": prediction.as_dict(),
        "timings": {k: round(v, 4) for k, v in prediction.timings.items()},
        "segmentations": None,
    }
    maps = prediction.segmentations
    if maps is not None and box is not None and prediction.affine is not None:
        size = maps.seg1.shape[0]
        factor = max(1, -(-size // REVIEW_EDGE))
        affine = review_affine(prediction.affine, box, size, factor)
        sub = (slice(None, None, factor),) * 3
        _save_nifti(maps.seg1[sub].astype(np.uint8), affine, folder / "seg1.nii.gz")
        _save_nifti(maps.seg2[sub].astype(np.uint8), affine, folder / "seg2.nii.gz")
        _save_nifti(maps.image[sub].astype(np.float32), affine, folder / "image.nii.gz")
        record["segmentations"] = {
            "seg1": "seg1.nii.gz", "seg2": "seg2.nii.gz", "image": "image.nii.gz",
            "network_size": size, "factor": factor,
            "seg1_labels": "0 background, 1..13 vessels (engine.labels.VESSELS), 14 aneurysm",
            "seg2_labels": "0 background, k = vessel k united with the aneurysm at its location",
        }
    path = folder / CASE_FILE
    partial = path.with_name(f".{CASE_FILE}.partial")
    partial.write_text(json.dumps(record, indent=2))
    os.replace(partial, path)
    return path
