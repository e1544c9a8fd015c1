"""Stage ``convert``: every DICOM series of a Kaggle-layout split -> LPS NIfTI, masks, vessel labels.

Output (the "Converted" contract), under ``ctx.workspace.converted(dataset, split)``:
``images/<uid>_0000.nii.gz`` (axis codes L, P, S), ``masks/<uid>.nii.gz`` (aneurysm boxes 14..26;
written for every converted series when the split has a localizer table, empty without points),
``vessels/<uid>.nii.gz`` (vessel labels 0..13 resampled into the image grid, only where a
segmentation exists), ``conversion.csv`` (one outcome row per series) and ``localizers_voxel.csv``
(each placed point in patient mm and voxel indices). A series with several time points has its
first in ``images/`` and the others in ``timepoints/<uid>_t<NNN>_0000.nii.gz``.

``conversion.csv`` columns: SeriesInstanceUID; status; fallback (``+``-joined names, see
``engine.data.dicom_series``); shape and spacing of the saved array (x, y, z); axis_codes (``LPS``);
timepoints; n_files; n_ignored (files left out: not DICOM, no pixels, truncated); seconds; reason
(failures: one line a person can act on); notes (files left out, implausible spacing); localizers (points
placed); localizer_issues (points that could not be placed, and why: a SOPInstanceUID that is not in
the series, a frame out of range, a multi-frame point without its frame index ``'f'``); vessels
(``written``, empty without a segmentation, or ``error: ...``); max_gap_mm / median_gap_mm (largest and
median distance between neighbouring slice positions); slice_gap (a note when the largest gap exceeds
``max_gap_factor`` times the median: a hole that resampling filled with interpolated slices,
``engine.data.slice_gaps``).

Nothing in a batch is lost because one series is odd: each series ends ``converted``,
``converted_fallback`` (the ``fallback`` column says which) or ``failed`` with a one-line reason, and
the job succeeds once the batch is through. Series run in a process pool (``workers``; 0 = all
cores). A rerun skips a series whose outputs exist and whose inputs (file names, sizes, mtimes,
its localizer rows, its segmentation, the seed) are unchanged; ``.manifest/<uid>.json`` records
them. Every file is written under a temporary name (in a hidden ``.partial/`` sub-folder) and
renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import nibabel as nib
import numpy as np
import pandas as pd

from engine.context import StageContext
from engine.data.convert_shards import merge, share, write_shard
from engine.data.convert_tables import report, write_tables
from engine.data.dicom_series import SeriesError, SeriesVolume, load_series
from engine.data.geometry import axis_codes, resample_nearest
from engine.data.kaggle import KaggleDataset, Localizer
from engine.data.localizers import BOX_MM, VoxelPoint, box_edges, box_mask, box_range, locate, series_rng
from engine.data.slice_gaps import DEFAULT_FACTOR, SliceGaps
from engine.labels import N_VESSELS

#: Bump when the outputs of an unchanged series would differ, so that reruns redo them.
#: 2: slice gaps in the row; multi-frame points without 'f' are issues instead of frame 0.
FORMAT_VERSION = 2
CONVERTED, FALLBACK, FAILED = "converted", "converted_fallback", "failed"
STATUSES = (CONVERTED, FALLBACK, FAILED)
TABLE_COLUMNS = ("SeriesInstanceUID", "status", "fallback", "shape", "spacing", "axis_codes", "timepoints",
                 "n_files", "n_ignored", "seconds", "reason", "notes", "localizers", "localizer_issues", "vessels",
                 "max_gap_mm", "median_gap_mm", "slice_gap")


@dataclass(frozen=True)
class SeriesTask:
    """Everything a worker process needs to convert one series (picklable)."""

    uid: str
    files: tuple[str, ...]
    out: str
    localizers: tuple[Localizer, ...]
    write_mask: bool
    segmentation: str | None
    seed: int
    #: Range (mm) the localizer box edge is drawn from (MODEL_SPEC 2.2: 2-5 mm).
    box_mm: tuple[float, float] = BOX_MM

    def signature(self) -> str:
        """Hash of the inputs: what must be unchanged for a rerun to skip this series."""
        stats = [(f, *_stat(f)) for f in self.files]
        seg = (self.segmentation, *_stat(self.segmentation)) if self.segmentation else None
        payload = [FORMAT_VERSION, stats, [asdict(p) for p in self.localizers], self.write_mask, seg, self.seed,
                   list(self.box_mm)]
        return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class Outputs:
    """Paths of one series' outputs inside the converted folder."""

    def __init__(self, out: Path | str, uid: str) -> None:
        self.root, self.uid = Path(out), uid
        self.image = self.root / "images" / f"{uid}_0000.nii.gz"
        self.mask = self.root / "masks" / f"{uid}.nii.gz"
        self.vessels = self.root / "vessels" / f"{uid}.nii.gz"
        self.manifest = self.root / ".manifest" / f"{uid}.json"

    def timepoint(self, t: int) -> Path:
        return self.root / "timepoints" / f"{self.uid}_t{t:03d}_0000.nii.gz"

    def remove(self) -> None:
        """Delete everything this series left from an earlier run (it must not look converted)."""
        for path in (self.image, self.mask, self.vessels, self.manifest,
                     *self.root.glob(f"timepoints/{self.uid}_t*_0000.nii.gz")):
            path.unlink(missing_ok=True)


PARTIAL = ".partial"


def _temporary(path: Path) -> Path:
    """Where ``path`` is written before the rename: a hidden sub-folder, so that a file left by a
    killed worker never matches a reader's ``images/*_0000.nii.gz`` or ``vessels/*.nii.gz``."""
    folder = path.parent / PARTIAL
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{os.getpid()}.{path.name}"


def save_nifti(img: nib.Nifti1Image, path: Path) -> None:
    """Write a NIfTI with scanner-space qform/sform, under a temporary name first."""
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    tmp = _temporary(path)
    nib.save(img, tmp)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    tmp = _temporary(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(table: pd.DataFrame, path: Path) -> None:
    write_text(path, table.to_csv(index=False))


def _place_localizers(task: SeriesTask, volume: SeriesVolume, image: nib.Nifti1Image
                      ) -> tuple[list[VoxelPoint], list[str]]:
    placed, issues = [], []
    for point in task.localizers:
        try:
            placed.append(locate(point, volume.geometries, image.affine, image.shape))
        except ValueError as exc:
            issues.append(str(exc))
    return placed, issues


def _vessels(segmentation: str, image: nib.Nifti1Image) -> tuple[np.ndarray | None, str]:
    """The vessel labels on the image grid and a status word (``written`` or ``error: ...``)."""
    try:
        seg = nib.load(segmentation)
        data = np.asanyarray(seg.dataobj)
    except Exception as exc:  # a broken segmentation must not fail the image conversion
        return None, f"error: cannot read {Path(segmentation).name} ({type(exc).__name__}: {str(exc)[:80]})"
    if data.ndim != 3:
        return None, f"error: {Path(segmentation).name} is {data.ndim}D, expected 3D labels"
    if data.size and (data.min() < 0 or data.max() > N_VESSELS or np.any(np.mod(data, 1))):
        return None, f"error: {Path(segmentation).name} has values outside the labels 0..{N_VESSELS}"
    labels = resample_nearest(data.astype(np.uint8), seg.affine, image.shape, image.affine)
    if np.any(data) and not np.any(labels):
        return labels, "written (warning: no vessel voxel falls inside the image; check the affines)"
    return labels, "written"


#: Voxel edges outside this range (mm) are flagged: Kaggle's problem series include implausible spacing.
PLAUSIBLE_SPACING_MM = (0.05, 20.0)


def _notes(ignored: list[str], zooms: tuple[float, ...]) -> str:
    """Files left out (the first three) and a warning for implausible voxel spacing."""
    notes = ignored[:3] + ([f"+{len(ignored) - 3} more files left out"] if len(ignored) > 3 else [])
    low, high = PLAUSIBLE_SPACING_MM
    if any(not low <= float(z) <= high for z in zooms):
        notes.append(f"implausible voxel spacing {', '.join(f'{float(z):g}' for z in zooms)} mm: check PixelSpacing "
                     f"and slice positions")
    return "; ".join(notes)


def convert_one(task: SeriesTask) -> dict[str, Any]:
    """Convert one series and write its outputs; never raises (failures become the row's reason)."""
    start = time.perf_counter()
    out = Outputs(task.out, task.uid)
    row: dict[str, Any] = {c: "" for c in TABLE_COLUMNS}
    row.update(SeriesInstanceUID=task.uid, n_files=len(task.files), localizers=0)
    placed: list[VoxelPoint] = []
    try:
        volume = load_series([Path(f) for f in task.files])
        image = volume.images[0]
        save_nifti(image, out.image)
        for t, extra in enumerate(volume.images[1:], start=1):
            save_nifti(extra, out.timepoint(t))
        placed, issues = _place_localizers(task, volume, image)
        if task.write_mask:
            edges = box_edges(series_rng(task.seed, task.uid), image.header.get_zooms()[:3], task.box_mm)
            save_nifti(nib.Nifti1Image(box_mask(image.shape, placed, edges), image.affine), out.mask)
        if task.segmentation:
            labels, row["vessels"] = _vessels(task.segmentation, image)
            if labels is not None:
                save_nifti(nib.Nifti1Image(labels.astype(np.uint8), image.affine), out.vessels)
        zooms = image.header.get_zooms()[:3]
        row.update(
            status=FALLBACK if volume.fallbacks else CONVERTED, fallback=volume.fallback,
            shape="x".join(map(str, image.shape[:3])), spacing="x".join(f"{z:.4f}" for z in zooms),
            axis_codes=axis_codes(image.affine), timepoints=len(volume.images), n_ignored=len(volume.ignored),
            localizers=len(placed), localizer_issues=" | ".join(issues),
            notes=_notes(volume.ignored, zooms),
        )
        if (gaps := volume.gaps) is not None:
            row.update(max_gap_mm=round(gaps.largest, 3), median_gap_mm=round(gaps.median, 3))
    except Exception as exc:  # SeriesError carries the reason; anything else is reported, not raised
        out.remove()
        placed = []
        reason = str(exc) if isinstance(exc, SeriesError) else f"unexpected {type(exc).__name__}: {exc}"
        row.update(status=FAILED, reason=" ".join(reason.split()))
        row["localizer_issues"] = f"{len(task.localizers)} point(s) not placed: series not converted" \
            if task.localizers else ""
    row["seconds"] = round(time.perf_counter() - start, 3)
    result = {"row": row, "points": [p.row() for p in placed]}
    write_text(out.manifest, json.dumps({"signature": task.signature(), **result}))
    return result


def _resumable(task: SeriesTask) -> dict[str, Any] | None:
    """The stored result of a series whose inputs and outputs are unchanged since the last run."""
    out = Outputs(task.out, task.uid)
    try:
        stored = json.loads(out.manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if stored.get("signature") != task.signature() or stored["row"]["status"] == FAILED:
        return None
    needed = [out.image] + ([out.mask] if task.write_mask else []) + \
             ([out.vessels] if str(stored["row"].get("vessels", "")).startswith("written") else [])
    needed += [out.timepoint(t) for t in range(1, int(stored["row"].get("timepoints") or 1))]
    return {"row": stored["row"], "points": stored["points"]} if all(p.exists() for p in needed) else None


def _crashed(task: SeriesTask, exc: BaseException) -> dict[str, Any]:
    Outputs(task.out, task.uid).remove()
    row = {c: "" for c in TABLE_COLUMNS}
    row.update(SeriesInstanceUID=task.uid, status=FAILED, n_files=len(task.files), localizers=0,
               reason=f"worker process failed ({type(exc).__name__}: {str(exc)[:120]}); often out of memory: "
                      f"rerun with fewer workers (finished series are kept)")
    return {"row": row, "points": []}


def _execute(tasks: list[SeriesTask], workers: int, on_result: Callable[[SeriesTask, dict[str, Any]], None]) -> None:
    """Run ``convert_one`` over the tasks, serially or in a process pool; results in completion order."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_result(task, convert_one(task))
        return
    # forkserver: safe when the caller has threads (unlike fork), and the server imports this
    # module once for all workers (unlike spawn).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        futures = {pool.submit(convert_one, task): task for task in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # a killed worker (BrokenProcessPool) fails its series, not the batch
                result = _crashed(task, exc)
            on_result(task, result)


def _progress_bar(total: int) -> Any:
    """A Rich progress bar when a person watches a terminal; nothing otherwise."""
    if not sys.stdout.isatty():
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("convert"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.description}"))


def _worker_count(workers: int) -> int:
    if workers > 0:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _tasks(data: KaggleDataset, out: Path, points: list[Localizer] | None, seed: int,
           box_mm: tuple[float, float] = BOX_MM) -> list[SeriesTask]:
    by_series: dict[str, list[Localizer]] = defaultdict(list)
    for point in points or []:
        by_series[point.series_uid].append(point)
    tasks = []
    for uid in data.series_uids():
        files = tuple(str(p) for p in data.series_files(uid))
        segmentation = data.segmentation(uid)
        tasks.append(SeriesTask(uid, files, str(out), tuple(by_series.get(uid, ())), points is not None,
                                str(segmentation) if segmentation else None, seed, box_mm))
    # Largest series first, so that the pool does not end waiting on one big series.
    return sorted(tasks, key=lambda t: -sum(os.path.getsize(f) for f in t.files))


def _clear_partial(out: Path) -> None:
    for partial in [out / PARTIAL, *out.glob(f"*/{PARTIAL}")]:
        shutil.rmtree(partial, ignore_errors=True)


def _remove_orphans(out: Path, uids: Iterable[str]) -> int:
    """Outputs of series that are no longer in the dataset (we wrote them: they have a manifest)."""
    keep = set(uids)
    orphans = [m.stem for m in (out / ".manifest").glob("*.json") if m.stem not in keep]
    for uid in orphans:
        Outputs(out, uid).remove()
    return len(orphans)


def mark_gaps(rows: list[dict[str, Any]], factor: float) -> None:
    """Fill each row's ``slice_gap`` note from its stored gaps (a new factor needs no reconversion)."""
    for row in rows:
        gaps = SliceGaps.from_row(row.get("max_gap_mm"), row.get("median_gap_mm"))
        row["slice_gap"] = gaps.note(factor) if gaps is not None else ""


def run(params: dict[str, Any], ctx: StageContext) -> None:
    """Convert one split of a Kaggle-layout dataset (see the module docstring for the outputs).

    With ``shards`` > 1 a job converts one share of the series (``ctx.shard``) and writes its
    tables under ``shards/``; the job without a shard merges them (:mod:`engine.data.convert_shards`).
    """
    shards = int(params.get("shards", 1))
    if shards > 1 and ctx.shard is None:
        merge(params, ctx, shards)
        return
    reporter = ctx.reporter
    data = KaggleDataset.open(ctx.workspace.dataset(params["dataset"]), params["split"])
    table = data.read_table()
    points = data.read_localizers()
    out = ctx.workspace.converted(params["dataset"], params["split"])
    (out / "images").mkdir(parents=True, exist_ok=True)
    tasks = _tasks(data, out, points, int(params["seed"]), box_range(params.get("box_mm", BOX_MM)))
    uids = {t.uid for t in tasks}
    if shards > 1:
        tasks = share(tasks, ctx.shard, shards)
    if table is not None:
        missing = sorted(set(table["SeriesInstanceUID"]) - uids)
        if missing:
            reporter.log(f"{len(missing)} series of {data.table_path.name} have no folder in {data.series_dir}, "
                         f"e.g. {missing[0]}")
    if points:
        lost = sorted({p.series_uid for p in points} - uids)
        if lost:
            reporter.log(f"localizers of {len(lost)} series without a folder are ignored, e.g. {lost[0]}")
    if shards == 1:  # shards run side by side: only the merging step tidies the shared folder
        _clear_partial(out)  # files of an interrupted run
        removed = _remove_orphans(out, uids)
        if removed:
            reporter.log(f"removed the outputs of {removed} series no longer in the dataset")

    results: dict[str, dict[str, Any]] = {}
    todo = []
    for task in tasks:
        stored = _resumable(task)
        if stored is None:
            todo.append(task)
        else:
            results[task.uid] = stored
    total = len(tasks)
    workers = _worker_count(int(params["workers"]))
    share_text = f" (shard {ctx.shard} of {shards})" if shards > 1 else ""
    reporter.log(f"converting {len(todo)} of {total} series of {data.series_dir}{share_text} with "
                 f"{min(workers, max(len(todo), 1))} worker(s); {total - len(todo)} unchanged since the last run")
    reporter.progress(len(results), total, "resumed" if results else "starting")

    bar = _progress_bar(total)
    with bar if bar is not None else nullcontext():
        bar_task = bar.add_task("", total=total, completed=len(results)) if bar is not None else None

        def on_result(task: SeriesTask, result: dict[str, Any]) -> None:
            results[task.uid] = result
            message = f"{task.uid}: {result['row']['status']}"
            reporter.progress(len(results), total, message)
            if bar is not None:
                bar.update(bar_task, completed=len(results), description=result["row"]["status"])

        _execute(todo, workers, on_result)

    rows = [results[uid]["row"] for uid in sorted(results)]
    mark_gaps(rows, float(params.get("max_gap_factor", DEFAULT_FACTOR)))
    voxel_rows = [p for uid in sorted(results) for p in results[uid]["points"]]
    if shards > 1:
        write_shard(out, ctx.shard, shards, rows, voxel_rows, reporter)
        return
    write_tables(out, rows, voxel_rows)
    _clear_partial(out)
    report(out, rows, voxel_rows, points is not None, reporter)
