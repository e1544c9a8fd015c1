"""Stage ``stage1-data``: the nnU-Net raw 2D "vessel box" dataset (MODEL_SPEC 3).

For each converted training volume with a vessel segmentation, the 3D bounding box of all vessel
labels defines the target: on every slice through that box the label is the filled rectangle of
the box's in-plane extent; slices outside it are background only. Slices come from all three axes,
at the inference positions (n//4, n//2, 3n//4) plus ``jitter`` random positions per axis; all-zero
slices are dropped (inference drops them too). Each slice is z-scored on its own and resampled
in-plane to ``spacing`` (rows, columns) with :func:`engine.stage1.slices.prepare_slice`, the same
function inference uses.

Files are nnU-Net 2D-as-3D NIfTI: one slice per file, array (1, rows, cols), spacing
(999, rows, cols) so that nnU-Net plans a 2D configuration only. Case names are
``<SeriesUID>_<axis><position>``. ``splits_final.json`` holds a 5-fold split grouped by series,
so that slices of one volume never sit in both training and validation.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from engine.context import StageContext
from engine.nnunet_runtime import case_listing
from engine.stage1.slices import AXES, box_of, inference_positions, plane_spacing, prepare_slice, read_volume, resample, \
    take_slice, target_shape

DATASET_SUFFIX = "VesselBox2D"
#: nnU-Net's convention for "no third dimension" in 2D-as-NIfTI data
SLICE_THICKNESS = 999.0


def dataset_name(dataset_id: int) -> str:
    return f"Dataset{dataset_id:03d}_{DATASET_SUFFIX}"


def slice_positions(occupied: np.ndarray, jitter: int, rng: np.random.Generator) -> list[int]:
    """Inference positions plus up to ``jitter`` other random positions among the non-empty ones.

    ``occupied[p]`` says whether slice ``p`` of the axis holds any nonzero voxel.
    """
    fixed = inference_positions(len(occupied))
    others = [p for p in np.flatnonzero(occupied) if p not in fixed]
    extra = rng.choice(others, size=min(jitter, len(others)), replace=False) if others else []
    return sorted(set(fixed) | {int(p) for p in extra})


def write_slice(path: Path, array: np.ndarray, spacing: tuple[float, float]) -> None:
    """One 2D slice as a (1, rows, cols) NIfTI in the layout nnU-Net's SimpleITK reader expects."""
    image = sitk.GetImageFromArray(array[None])
    image.SetSpacing((float(spacing[1]), float(spacing[0]), SLICE_THICKNESS))
    sitk.WriteImage(image, str(path), useCompression=True)


def volume_cases(image: np.ndarray, spacing: np.ndarray, vessels: np.ndarray, target: tuple[float, float],
                 jitter: int, rng: np.random.Generator):
    """Yield (case suffix, image slice, label slice) for one volume, already normalised and resampled."""
    box = box_of(vessels > 0)
    if box is None:
        return
    for axis in range(3):
        rows_axis, cols_axis = [a for a in range(3) if a != axis]
        occupied = image.any(axis=(rows_axis, cols_axis))
        for position in slice_positions(occupied, jitter, rng):
            raw = take_slice(image, axis, position)
            if not raw.any():
                continue
            label = np.zeros(raw.shape, dtype=np.uint8)
            if box[axis][0] <= position < box[axis][1]:
                label[slice(*box[rows_axis]), slice(*box[cols_axis])] = 1
            in_plane = plane_spacing(spacing, axis)
            data = prepare_slice(raw, in_plane, target).numpy()
            seg = resample(label, target_shape(raw.shape, in_plane, target), label=True).numpy().astype(np.uint8)
            yield f"{AXES[axis]}{position:04d}", data.astype(np.float32), seg


def grouped_splits(cases: dict[str, list[str]], seed: int = 12345, folds: int = 5) -> list[dict[str, list[str]]]:
    """nnU-Net's split format, 5 folds over series (fewer when there are fewer series)."""
    from sklearn.model_selection import KFold

    series = sorted(cases)
    if len(series) < 2:
        everything = sorted(c for s in series for c in cases[s])
        return [{"train": everything, "val": everything}]
    splits = []
    for train_idx, val_idx in KFold(min(folds, len(series)), shuffle=True, random_state=seed).split(series):
        splits.append({"train": sorted(c for i in train_idx for c in cases[series[i]]),
                       "val": sorted(c for i in val_idx for c in cases[series[i]])})
    return splits


def run(params: dict[str, Any], ctx: StageContext) -> None:
    converted = ctx.workspace.converted(params["dataset"], "train")
    images, vessels = converted / "images", converted / "vessels"
    if not vessels.is_dir():
        raise FileNotFoundError(f"{vessels} does not exist; run convert on the training split of {params['dataset']}")
    uids = sorted(p.name[: -len(".nii.gz")] for p in vessels.glob("*.nii.gz"))
    if not uids:
        raise FileNotFoundError(f"no vessel segmentation in {vessels}; stage 1 needs series with vessel masks")
    target = tuple(float(s) for s in params["spacing"])
    if len(target) != 2 or min(target) <= 0:
        raise ValueError(f"spacing must be two positive numbers (rows, columns) in mm, got {params['spacing']}")

    final = ctx.workspace.nnunet_raw / dataset_name(params["dataset_id"])
    others = [p for p in ctx.workspace.nnunet_raw.glob(f"Dataset{params['dataset_id']:03d}_*") if p != final]
    if others:
        raise FileExistsError(f"nnU-Net dataset id {params['dataset_id']} is taken by {others[0]}; choose another dataset_id")
    # a hidden name: nnU-Net finds datasets by the "DatasetNNN_" prefix and must never see this one
    building = final.with_name(f".building-{final.name}")
    shutil.rmtree(building, ignore_errors=True)
    (building / "imagesTr").mkdir(parents=True)
    (building / "labelsTr").mkdir()

    cases: dict[str, list[str]] = {}
    positives = 0
    for index, uid in enumerate(uids):
        image_file = images / f"{uid}_0000.nii.gz"
        if not image_file.is_file():
            raise FileNotFoundError(f"series {uid}: vessel mask without image {image_file}")
        image, spacing = read_volume(image_file)
        vessel, _ = read_volume(vessels / f"{uid}.nii.gz", np.uint8)
        if vessel.shape != image.shape:
            raise ValueError(f"series {uid}: vessel mask shape {vessel.shape} differs from image {image.shape}")
        rng = np.random.default_rng([params["seed"], index])
        cases[uid] = []
        for suffix, data, seg in volume_cases(image, spacing, vessel, target, params["jitter"], rng):
            case = f"{uid}_{suffix}"
            write_slice(building / "imagesTr" / f"{case}_0000.nii.gz", data, target)
            write_slice(building / "labelsTr" / f"{case}.nii.gz", seg, target)
            cases[uid].append(case)
            positives += int(seg.any())
        if not cases[uid]:
            ctx.reporter.log(f"series {uid}: empty vessel mask or empty image, no slices")
            del cases[uid]
        ctx.reporter.progress(index + 1, len(uids), uid)

    total = sum(len(c) for c in cases.values())
    if total == 0:
        raise ValueError(f"no usable slices from {len(uids)} series in {converted}")
    dataset_json = {
        "channel_names": {"0": "zscore"},
        "labels": {"background": 0, "vessel_box": 1},
        "numTraining": total,
        "file_ending": ".nii.gz",
        "name": dataset_name(params["dataset_id"]),
        "description": f"Stage-1 vessel box slices from {params['dataset']} (MODEL_SPEC 3), spacing {list(target)} mm",
        "dataset": case_listing([case for series in cases.values() for case in series]),
    }
    (building / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    (building / "splits_final.json").write_text(json.dumps(grouped_splits(cases), indent=2))
    shutil.rmtree(final, ignore_errors=True)
    building.rename(final)

    ctx.reporter.metric("series", len(cases))
    ctx.reporter.metric("slices", total)
    ctx.reporter.metric("positive_fraction", positives / total)
    ctx.reporter.artefact("dataset", final)
    ctx.reporter.log(f"{dataset_name(params['dataset_id'])}: {total} slices from {len(cases)} series")
