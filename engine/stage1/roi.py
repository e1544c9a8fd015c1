"""Stage ``roi``: the stage-1 nine-slice inference, one crop box per series, and the crops (MODEL_SPEC 3).

Per converted volume: the slices at n//4, n//2, 3n//4 of every axis (all-zero ones dropped), each
z-scored, resampled to the model's in-plane spacing, predicted by nnU-Net's sliding window (step 0.5,
Gaussian weighting, no mirroring), resampled back and arg-maxed; the slice boxes are fused by
:func:`engine.stage1.fusion.fuse`. The model is loaded once per job.

Outputs in ``ctx.workspace.rois(dataset, split)``: ``rois.csv`` (half-open voxel ranges on the
(z, y, x) array, the same in mm from the first voxel, the fallback taken, the slices that contributed,
seconds of inference without file reading and writing) and
the cropped ``images/``, ``masks/`` and ``vessels/`` files. Afterwards the coverage check: the
fraction of localizer points inside their series' box, overall and per modality, as metrics.
"""
from __future__ import annotations

import csv
import os
import re
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from engine.context import StageContext, input_path
from engine.nnunet_runtime import configure_environment, load_predictor, select_device
from engine.stage1.fusion import Box3D, SliceBox, fuse
from engine.stage1.slices import inference_positions, plane_spacing, prepare_slice, read_volume, resample, take_slice

ROI_COLUMNS = ["SeriesInstanceUID", "z0", "z1", "y0", "y1", "x0", "x1",
               "z0_mm", "z1_mm", "y0_mm", "y1_mm", "x0_mm", "x1_mm", "fallback", "slices_used", "seconds"]


class VesselBoxModel:
    """A trained stage-1 results folder, loaded once, that turns a volume into a crop box."""

    def __init__(self, predictor: Any) -> None:
        """Wrap an initialised ``nnUNetPredictor`` of a 2D configuration (see :meth:`load`)."""
        self.predictor = predictor
        config = predictor.configuration_manager
        if len(config.patch_size) != 2:
            raise ValueError(f"not a 2D model (patch size {config.patch_size})")
        if list(predictor.plans_manager.transpose_forward) != [0, 1, 2]:
            raise ValueError("the plans transpose the data; stage-1 slices are written so that they never do")
        #: in-plane spacing (rows, columns) the model was trained on
        self.spacing = (float(config.spacing[0]), float(config.spacing[1]))

    @classmethod
    def load(cls, model_folder: Path, device: torch.device) -> "VesselBoxModel":
        """A results folder with MODEL_SPEC 3's inference settings: step 0.5, Gaussian, no mirroring."""
        return cls(load_predictor(model_folder, device=device, tile_step_size=0.5, use_gaussian=True,
                                  use_mirroring=False))

    def slice_logits(self, slices: list[torch.Tensor]) -> list[torch.Tensor]:
        """Sliding-window logits (classes, rows, cols) per prepared slice, averaged over the folds."""
        weights = self.predictor.list_of_parameters
        sums: list[torch.Tensor] = []
        for fold, parameters in enumerate(weights):
            if len(weights) > 1:
                self.predictor.network.load_state_dict(parameters)
            for i, data in enumerate(slices):
                # nnU-Net's ZScoreNormalization of the resampled slice, as its preprocessing did in training
                data = (data - data.mean()) / max(float(data.std()), 1e-8)
                logits = self.predictor.predict_sliding_window_return_logits(data[None, None]).float().cpu()[:, 0]
                if fold == 0:
                    sums.append(logits)
                else:
                    sums[i] += logits
        return [s / len(weights) for s in sums]

    def slice_boxes(self, volume: np.ndarray, spacing_zyx: np.ndarray) -> list[SliceBox]:
        """The foreground boxes of the (at most nine) inference slices of a (z, y, x) volume."""
        cut = []
        for axis in range(3):
            for position in inference_positions(volume.shape[axis]):
                raw = take_slice(volume, axis, position)
                if raw.any():
                    cut.append((axis, position, raw))
        prepared = [prepare_slice(raw, plane_spacing(spacing_zyx, axis), self.spacing) for axis, _, raw in cut]
        boxes = []
        for (axis, position, raw), logits in zip(cut, self.slice_logits(prepared)):
            mask = resample(logits, raw.shape).argmax(0).numpy()
            box = SliceBox.from_mask(axis, position, mask)
            if box is not None:
                boxes.append(box)
        return boxes

    def box(self, volume: np.ndarray, spacing_zyx: np.ndarray, margin: int = 0) -> tuple[Box3D, int]:
        """The fused crop box of a volume and the number of slices that contributed."""
        boxes = self.slice_boxes(volume, spacing_zyx)
        return fuse(volume.shape, boxes, margin), len(boxes)


def save_crop(source: Path, target: Path, box: Box3D) -> None:
    """Crop a converted NIfTI to ``box`` (affine shifted accordingly); write to a temporary name, then rename."""
    img = nib.load(str(source))
    (z0, z1), (y0, y1), (x0, x1) = box.ranges
    cropped = img.slicer[x0:x1, y0:y1, z0:z1]  # NIfTI index order is (x, y, z)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".part-{target.name}")
    nib.save(cropped, str(partial))
    os.replace(partial, target)


def modalities(dataset_folder: Path, split: str) -> dict[str, str]:
    """SeriesInstanceUID -> Modality from the dataset's CSV (train.csv or test_truth.csv), if present."""
    table = dataset_folder / ("train.csv" if split == "train" else "test_truth.csv")
    if not table.is_file():
        return {}
    frame = pd.read_csv(table, usecols=lambda c: c in ("SeriesInstanceUID", "Modality"), dtype=str)
    if "Modality" not in frame:
        return {}
    return dict(zip(frame["SeriesInstanceUID"], frame["Modality"]))


def coverage(localizers: Path, boxes: dict[str, Box3D], modality: dict[str, str]) -> dict[str, tuple[int, int]]:
    """(points inside, points) overall ('') and per modality, for the localizers of boxed series."""
    if not localizers.is_file():
        return {}
    points = pd.read_csv(localizers, dtype={"SeriesInstanceUID": str})
    counts: dict[str, list[int]] = {}
    for row in points.itertuples(index=False):
        box = boxes.get(row.SeriesInstanceUID)
        if box is None or pd.isna(row.i):
            continue
        inside = int(box.contains(float(row.k), float(row.j), float(row.i)))  # i, j, k index x, y, z
        for key in ("", modality.get(row.SeriesInstanceUID, "unknown")):
            counts.setdefault(key, [0, 0])
            counts[key][0] += inside
            counts[key][1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    partial = path.with_name(f".part-{path.name}")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROI_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)



def run(params: dict[str, Any], ctx: StageContext) -> None:
    configure_environment(ctx.workspace)
    device = select_device(params["device"])
    converted = ctx.workspace.converted(params["dataset"], params["split"])
    uids = sorted(p.name[: -len("_0000.nii.gz")] for p in (converted / "images").glob("*_0000.nii.gz"))
    if not uids:
        raise FileNotFoundError(f"no converted images in {converted / 'images'}; run convert for "
                                f"{params['dataset']} / {params['split']} first")
    model_folder = input_path("model", params["model"], "a stage-1 results folder")
    model = VesselBoxModel.load(model_folder, device)
    ctx.reporter.log(f"stage-1 model {model_folder} on {device}, spacing {model.spacing}")

    out = ctx.workspace.rois(params["dataset"], params["split"])
    out.mkdir(parents=True, exist_ok=True)
    rows, boxes = [], {}
    for index, uid in enumerate(uids):
        image_file = converted / "images" / f"{uid}_0000.nii.gz"
        try:
            volume, spacing = read_volume(image_file)
        except Exception as exc:
            raise RuntimeError(f"series {uid}: cannot read {image_file}: {exc}") from exc
        started = time.perf_counter()
        box, used = model.box(volume, spacing, params["margin"])
        seconds = time.perf_counter() - started
        save_crop(image_file, out / "images" / image_file.name, box)
        for kind in ("masks", "vessels"):
            source = converted / kind / f"{uid}.nii.gz"
            if source.is_file():
                save_crop(source, out / kind / source.name, box)
        boxes[uid] = box
        row: dict[str, Any] = {"SeriesInstanceUID": uid, "fallback": box.fallback, "slices_used": used,
                               "seconds": round(seconds, 4)}
        for name, (lo, hi), step in zip("zyx", box.ranges, spacing):
            row.update({f"{name}0": lo, f"{name}1": hi,
                        f"{name}0_mm": round(lo * float(step), 3), f"{name}1_mm": round(hi * float(step), 3)})
        rows.append(row)
        if box.fallback:
            ctx.reporter.log(f"series {uid}: fallback {box.fallback}")
        ctx.reporter.progress(index + 1, len(uids), uid)
    write_table(out / "rois.csv", rows)

    ctx.reporter.metric("roi_seconds_mean", float(np.mean([r["seconds"] for r in rows])))
    ctx.reporter.metric("fallbacks", float(sum(bool(r["fallback"]) for r in rows)))
    counts = coverage(converted / "localizers_voxel.csv", boxes,
                      modalities(ctx.workspace.dataset(params["dataset"]), params["split"]))
    for key, (inside, total) in sorted(counts.items()):
        name = "coverage" + (f"_{re.sub(r'[^A-Za-z0-9]+', '_', key)}" if key else "")
        ctx.reporter.metric(name, inside / total)
        ctx.reporter.log(f"{name}: {inside}/{total} localizer points inside the box")
    if not counts:
        ctx.reporter.log("coverage: no localizer points for these series")
    ctx.reporter.artefact("rois", out / "rois.csv")
    ctx.reporter.artefact("crops", out)
