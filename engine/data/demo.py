"""Stage ``demo-data``: write the synthetic demo cohort in the exact Kaggle layout.

The output imitates the competition download (COMPETITION.md) so that one code path serves the demo
and a user's real data::

    train.csv                 18 columns, one row per training series
    train_localizers.csv      one row per aneurysm: the sac centre on the slice that contains it
    series/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    segmentations/<uid>/<uid>.nii and <uid>_cowseg.nii      for a subset of training series
    test/series/...           the held-out split, with its truth in test_truth.csv (18 columns)

plus files a real download lacks, which say what the generator did: ``aneurysms.csv`` (each sac's
centre in LPS mm, radius, side of the mid-sagittal plane, for both splits), ``demo_series.csv`` (each
series' acquisition: orientation, reversed order, multi-frame, spacing, shape, defect),
``defects.csv`` (SeriesInstanceUID, defect; only with ``defects``) and ``demo.json`` (the parameters).

Same parameters -> byte-identical CSVs and identical pixels: every random draw comes from the seed
(one generator for the cohort plan, one per series), UIDs are hashed from the parameters, and dates
are fixed. The cohort is written to a temporary sibling folder and renamed into place at the end;
running again with the same parameters finds ``demo.json`` and leaves the folder as it is.

``test_tags_only`` strips the held-out split's files to the competition's test allow-list, as on
Kaggle (training files keep every tag; a stripped multi-frame file has no geometry left, so its
training twin could not be annotated).

Localizer ``coordinates`` are ``{'x': column, 'y': row}`` in pixels of the named slice; for a
multi-frame file ``'f'`` is the 0-based index of the frame (into ``pixel_array``).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom

from engine.context import StageContext
from engine.data.appearance import storage_for, synthesize
from engine.data.cohort_plan import DEFECTS, SeriesPlan, plan_cohort, uid
from engine.data.dicom_writer import SeriesHeader, write_multiframe, write_slices, write_text_report
from engine.data.phantom import ANEURYSM_RADIUS, Phantom, build_phantom, location_side, render
from engine.data.slice_grid import SliceGrid
from engine.labels import LOCALIZER_COLUMNS, LOCATIONS, TRAIN_COLUMNS

#: Bump when the output of the same parameters changes, so that an old cohort is regenerated.
GENERATOR_VERSION = 4
TRUTH_COLUMNS = ("SeriesInstanceUID", "split", "location", "SOPInstanceUID", "frame", "x_mm", "y_mm", "z_mm",
                 "radius_mm", "side_mm")
SERIES_COLUMNS = ("SeriesInstanceUID", "split", "Modality", "orientation", "reversed", "multiframe", "segmentation",
                  "defect", "rows", "cols", "slices", "row_spacing", "col_spacing", "slice_spacing")
DEFECT_COLUMNS = ("SeriesInstanceUID", "defect")
#: In-plane field of view (mm) and slice spacing relative to in-plane spacing, per modality.
_FOV_MM = (150.0, 180.0)
_SLAB_MM = (110.0, 150.0)
_ANISOTROPY = {"CTA": (0.6, 0.9), "MRA": (0.5, 0.8), "MRI T2": (1.3, 2.0), "MRI T1post": (0.8, 1.2)}
#: Slice spacing never exceeds this, so the slice through a sac's centre always cuts the sac.
MAX_SLICE_SPACING = 5.0
_DESCRIPTION = {"CTA": "CTA HEAD", "MRA": "TOF 3D MRA", "MRI T2": "T2 TSE", "MRI T1post": "T1 POST GD"}


@dataclass
class SeriesResult:
    """What one written series contributes to the CSVs."""

    plan: SeriesPlan
    grid: SliceGrid
    localizers: list[tuple[str, str, str, str]]
    truth: list[tuple[Any, ...]]


def run(params: dict[str, Any], ctx: StageContext) -> None:
    """Write the cohort to ``out`` ('' = <workspace>/datasets/demo) and register its files."""
    n, seed, size = int(params["n"]), int(params["seed"]), int(params["size"])
    test_fraction = float(params["test_fraction"])
    defects, tags_only = bool(params["defects"]), bool(params["test_tags_only"])
    # absent from hand-written parameter dicts of older callers: the tiny profile's values
    radius_mm = tuple(float(r) for r in params.get("aneurysm_mm", ANEURYSM_RADIUS))
    location_positives = int(params.get("test_location_positives", 1))
    if n < 1:
        raise ValueError(f"demo-data: n must be >= 1, got {n}")
    if seed < 0:
        raise ValueError(f"demo-data: seed must be >= 0, got {seed}")
    if size < 16:
        raise ValueError(f"demo-data: size must be >= 16 voxels, got {size}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"demo-data: test_fraction must be in [0, 1), got {test_fraction}")
    if len(radius_mm) != 2 or not 0.5 <= radius_mm[0] <= radius_mm[1] <= 12.0:
        raise ValueError(f"demo-data: aneurysm_mm must be two radii low,high with 0.5 <= low <= high <= 12 mm, "
                         f"got {params['aneurysm_mm']}")
    if location_positives < 0:
        raise ValueError(f"demo-data: test_location_positives must be >= 0, got {location_positives}")
    out = Path(params["out"]).expanduser() if params["out"] else ctx.workspace.datasets / "demo"
    config = {"generator": GENERATOR_VERSION, "n": n, "seed": seed, "size": size, "test_fraction": test_fraction,
              "defects": defects, "test_tags_only": tags_only, "aneurysm_mm": list(radius_mm),
              "test_location_positives": location_positives}
    marker = out / "demo.json"
    if marker.is_file() and json.loads(marker.read_text()) == config:
        ctx.reporter.log(f"demo cohort with these parameters already at {out}; left as it is")
        _register(ctx, out, defects)
        return
    if out.exists() and not marker.is_file() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"demo-data: {out} exists and is not a demo cohort (no demo.json); choose another out")

    started = time.perf_counter()
    root = tuple(f"{k}={v}" for k, v in config.items())
    plans = plan_cohort(n, seed, test_fraction, defects, ("rsna-tui demo cohort", *root), location_positives)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        results = []
        for plan in plans:
            ctx.reporter.progress(plan.index, n, f"series {plan.index + 1}/{n}: {plan.modality}, {plan.orientation}")
            results.append(write_series(plan, partial, size, seed, root, tags_only and plan.split == "test",
                                        radius_mm))
        ctx.reporter.progress(n, n, "writing tables")
        _write_tables(partial, results, defects)
        (partial / "demo.json").write_text(json.dumps(config, indent=1) + "\n")
        _swap_into_place(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    seconds = time.perf_counter() - started
    positives = sum(p.positive for p in plans)
    ctx.reporter.metric("series", n)
    ctx.reporter.metric("positive_series", positives)
    ctx.reporter.metric("seconds", seconds)
    ctx.reporter.log(f"wrote {n} series ({positives} with aneurysms, "
                     f"{sum(p.split == 'test' for p in plans)} held out) to {out} in {seconds:.1f} s")
    _register(ctx, out, defects)


def write_series(plan: SeriesPlan, root_dir: Path, size: int, seed: int, root: tuple[str, ...],
                 tags_only: bool, radius_mm: tuple[float, float] = ANEURYSM_RADIUS) -> SeriesResult:
    """Render one planned series and write its DICOM files (and segmentation) under ``root_dir``."""
    rng = np.random.default_rng([seed, 1, plan.index])
    phantom = build_phantom(rng, plan.locations, radius_mm)
    grid = _grid(plan, phantom, size, rng)
    fields = render(phantom, grid)
    storage = storage_for(plan.modality, rng, plan.multiframe)
    values = synthesize(plan.modality, fields, rng, min(grid.row_spacing, grid.col_spacing))
    stored = storage.encode(values)

    header = SeriesHeader(
        modality="CT" if plan.modality == "CTA" else "MR", description=_DESCRIPTION[plan.modality],
        patient_id=plan.patient_id, patient_age=plan.age, patient_sex=plan.sex[0], study_uid=plan.study_uid,
        series_uid=plan.series_uid, frame_of_reference_uid=plan.frame_of_reference_uid, series_number=plan.index + 1,
    )
    base = root_dir / "test" if plan.split == "test" else root_dir
    folder = base / "series" / plan.series_uid
    folder.mkdir(parents=True)
    order = list(range(grid.slices))[::-1] if plan.reversed else list(range(grid.slices))
    sops: list[str]
    if plan.multiframe:
        sop = uid(root, "sop", plan.index, "multiframe")
        write_multiframe(folder / f"{sop}.dcm", header, grid, stored, storage, sop, order, tags_only)
        sops = [sop] * grid.slices
    else:
        sops = [uid(root, "sop", plan.index, k) for k in range(grid.slices)]
        instance = [0] * grid.slices
        for position, k in enumerate(order):
            instance[k] = position + 1
        write_slices(folder, header, grid, stored, storage, sops, instance, tags_only)

    localizers, truth = [], []
    for sac in phantom.aneurysms:
        centre = phantom.to_lps(sac.centre)
        i, j, k = grid.lps_to_voxel(centre)
        if not (0 <= i <= grid.cols - 1 and 0 <= j <= grid.rows - 1 and 0 <= np.rint(k) <= grid.slices - 1):
            raise RuntimeError(f"demo-data: series {plan.series_uid}: aneurysm centre outside the field of view")
        k = int(np.rint(k))
        coordinates: dict[str, Any] = {"x": round(float(i), 2), "y": round(float(j), 2)}
        frame = ""
        if plan.multiframe:
            frame = order.index(k)
            coordinates["f"] = frame
        name = LOCATIONS[sac.location]
        localizers.append((plan.series_uid, sops[k], str(coordinates), name))
        side = phantom.side_mm(centre)
        if location_side(sac.location) and np.sign(side) != location_side(sac.location):
            raise RuntimeError(f"demo-data: series {plan.series_uid}: {name} aneurysm placed on the wrong side")
        truth.append((plan.series_uid, plan.split, name, sops[k], frame, *(f"{v:.3f}" for v in centre),
                      f"{sac.radius:.3f}", f"{side:.3f}"))

    if plan.segmentation:
        _write_segmentation(root_dir / "segmentations" / plan.series_uid, plan.series_uid, grid,
                            storage.decode(stored), fields.labels)
    if plan.defect:
        _apply_defect(plan, folder, header, grid, sops, rng, root)
    return SeriesResult(plan, grid, localizers, truth)


def _grid(plan: SeriesPlan, phantom: Phantom, size: int, rng: np.random.Generator) -> SliceGrid:
    """An acquisition grid around the circle of Willis that contains every sac."""
    spacing = rng.uniform(*_FOV_MM) / size
    slice_spacing = min(spacing * rng.uniform(*_ANISOTROPY[plan.modality]), MAX_SLICE_SPACING)
    slices = int(np.clip(round(rng.uniform(*_SLAB_MM) / slice_spacing), max(8, size // 2), round(1.5 * size)))
    # Sagittal and coronal series have a rectangular matrix (fewer columns), coronal ones also
    # rectangular pixels: a reader that swaps rows and columns, or the two PixelSpacing values, fails.
    rows, cols = size, size if plan.orientation == "axial" else size - size // 8
    row_spacing = spacing * 1.1 if plan.orientation == "coronal" else spacing
    shape, spacings = (slices, rows, cols), (slice_spacing, row_spacing, spacing)
    centre = phantom.translation + rng.normal(0.0, 5.0, 3)
    grid = SliceGrid.centred(plan.orientation, shape, spacings, centre)
    if phantom.aneurysms:
        sacs = np.array([phantom.to_lps(a.centre) for a in phantom.aneurysms])
        ijk = grid.lps_to_voxel(sacs)
        limit = np.array([grid.cols, grid.rows, grid.slices]) - 3
        if np.any(ijk < 2) or np.any(ijk > limit):
            centre = (sacs.min(axis=0) + sacs.max(axis=0)) / 2
            grid = SliceGrid.centred(plan.orientation, shape, spacings, centre)
    return grid


def _write_segmentation(folder: Path, series_uid: str, grid: SliceGrid, image: np.ndarray, labels: np.ndarray) -> None:
    """The image and its 13-class vessel labels as NIfTI on the series' own grid (array i, j, k)."""
    folder.mkdir(parents=True)
    affine = grid.nifti_affine()
    for suffix, data in (("", np.rint(image).astype(np.int16)), ("_cowseg", labels.astype(np.uint8))):
        img = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
        nib.save(img, folder / f"{series_uid}{suffix}.nii")


def _apply_defect(plan: SeriesPlan, folder: Path, header: SeriesHeader, grid: SliceGrid, sops: list[str],
                  rng: np.random.Generator, root: tuple[str, ...]) -> None:
    """Break a written single-frame series the way real downloads are broken (see ``DEFECTS``)."""
    k = int(rng.integers(grid.slices // 4, 3 * grid.slices // 4))
    path = folder / f"{sops[k]}.dcm"
    if plan.defect == "missing_slice":
        path.unlink()
    elif plan.defect == "duplicate_position":
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = grid.image_position(k - 1)
        ds.SliceLocation = round(float(np.dot(grid.image_position(k - 1), grid.normal)), 4)
        ds.save_as(path, enforce_file_format=True)
    elif plan.defect == "truncated_file":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
    elif plan.defect == "non_image_object":
        report = uid(root, "sop", plan.index, "report")
        write_text_report(folder / f"{report}.dcm", header, report)
    else:
        raise ValueError(f"unknown defect {plan.defect!r}; known: {', '.join(DEFECTS)}")


def _write_tables(folder: Path, results: list[SeriesResult], defects: bool) -> None:
    train_rows, test_rows, localizers, truth, series = [], [], [], [], []
    for r in results:
        p = r.plan
        flags = [int(i in p.locations) for i in range(len(LOCATIONS))] + [int(p.positive)]
        row = [p.series_uid, p.age, p.sex, p.modality, *flags]
        (test_rows if p.split == "test" else train_rows).append(row)
        if p.split == "train":
            localizers += r.localizers
        truth += r.truth
        g = r.grid
        series.append((p.series_uid, p.split, p.modality, p.orientation, int(p.reversed), int(p.multiframe),
                       int(p.segmentation), p.defect, g.rows, g.cols, g.slices, g.row_spacing, g.col_spacing,
                       g.slice_spacing))
    _csv(folder / "train.csv", TRAIN_COLUMNS, train_rows)
    _csv(folder / "test_truth.csv", TRAIN_COLUMNS, test_rows)
    _csv(folder / "train_localizers.csv", LOCALIZER_COLUMNS, localizers)
    _csv(folder / "aneurysms.csv", TRUTH_COLUMNS, truth)
    _csv(folder / "demo_series.csv", SERIES_COLUMNS, series)
    if defects:
        broken = [(r.plan.series_uid, r.plan.defect) for r in results if r.plan.defect]
        _csv(folder / "defects.csv", DEFECT_COLUMNS, broken)


def _csv(path: Path, header: tuple[str, ...], rows: list) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _swap_into_place(partial: Path, out: Path) -> None:
    """Replace ``out`` (absent, empty or an older demo cohort) by the finished ``partial`` folder."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(out)


def _register(ctx: StageContext, out: Path, defects: bool) -> None:
    ctx.reporter.artefact("dataset", out)
    ctx.reporter.artefact("train_csv", out / "train.csv")
    ctx.reporter.artefact("localizers_csv", out / "train_localizers.csv")
    ctx.reporter.artefact("test_truth_csv", out / "test_truth.csv")
    ctx.reporter.artefact("aneurysms_csv", out / "aneurysms.csv")
    ctx.reporter.artefact("series_csv", out / "demo_series.csv")
    if defects:
        ctx.reporter.artefact("defects_csv", out / "defects.csv")
