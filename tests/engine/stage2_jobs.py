"""Stage-2 training as a user runs it: a workspace with converted scans and crops, and jobs started
through the real CLI (``python -m rsna_tui run --follow``), so the real runner writes their records.

Shared by ``tests/engine/test_stage2_train.py`` and ``bench/bench_stage2_train.py``. Everything a
stage reads from earlier stages is set up in :func:`prepare_stage2_workspace` (and fine-tunes get
their start as an explicit ``init_from`` checkpoint path): when the way stages find their inputs
changes, this is the one place to adapt.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from engine.context import StageContext
from engine.data import convert
from engine.stage1.fusion import Box3D
from engine.stage1.roi import save_crop, write_table

REPO = Path(__file__).resolve().parents[2]
#: The tests' stage-2 network: 16^3 with 4-8-16 features, within about two minutes on a busy 2-core machine.
SMALL = {"size": 16, "features": "4,8,16", "blocks": "1,1,1", "device": "cpu", "dataset_id": 201}


def cli_env() -> dict[str, str]:
    """The CLI's environment: this tree importable, one thread per job (tiny 3D convolutions on a shared
    2-core machine run faster single-threaded), nnU-Net without worker processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSNA_TUI_")}
    env.update({"PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
                "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0"})
    return env


def rsna_tui(root: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``rsna-tui --workspace ROOT ARGS`` in a subprocess, output captured."""
    result = subprocess.run([sys.executable, "-m", "rsna_tui", "--workspace", str(root), *args], cwd=REPO,
                            env=cli_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"rsna-tui {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def set_options(params: dict[str, Any]) -> list[str]:
    """``--set key=value`` for each parameter (lists as comma lists)."""
    out = []
    for key, value in params.items():
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        out += ["--set", f"{key}={text}"]
    return out


def job_events(root: Path, job_id: int | str) -> list[dict[str, Any]]:
    """The complete lines of a job's ``events.jsonl`` (none before it exists)."""
    path = root / "jobs" / str(job_id) / "events.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]  # the last piece may be a line being written
    return [json.loads(line) for line in lines if line.strip()]


def job_log(root: Path, job_id: int | str, chars: int = 3000) -> str:
    path = root / "jobs" / str(job_id) / "log.txt"
    return path.read_text()[-chars:] if path.exists() else "(no log)"


def run_stage(root: Path, stage: str, params: dict[str, Any], timeout: float = 600) -> tuple[int, list[dict[str, Any]]]:
    """``rsna-tui run --stage STAGE --no-deps --set ... --follow --json``; the job id and its events, or an
    AssertionError with the job's log when it did not succeed."""
    # --no-deps: only this stage (its inputs are prepare_stage2_workspace's folders and explicit paths)
    result = rsna_tui(root, "run", "--stage", stage, "--no-deps", *set_options(params), "--follow", "--json",
                      check=False, timeout=timeout)
    try:
        job = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"{stage}: no job JSON (exit {result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}") from None
    if result.returncode != 0 or job["status"] != "succeeded":
        raise AssertionError(f"{stage} job {job['id']} {job['status']}: {job.get('error')}\n"
                             f"{job_log(root, job['id'])}")
    return int(job["id"]), job_events(root, job["id"])


def write_ground_truth_rois(ctx: StageContext, dataset: str, margin: int = 2) -> None:
    """Crops in the ``rois`` layout from the box around each series' vessel and aneurysm voxels (the
    whole volume when it has neither), written by stage 1's crop writer: a stand-in for a trained
    stage-1 model (a real ``roi`` needs a ``train2d``, another minute of CPU)."""
    converted = ctx.workspace.converted(dataset, "train")
    out = ctx.workspace.rois(dataset, "train")
    rows = []
    for image_file in sorted((converted / "images").glob("*_0000.nii.gz")):
        uid = image_file.name[: -len("_0000.nii.gz")]
        image = nib.load(str(image_file))
        spacing = image.header.get_zooms()[:3][::-1]
        hit = np.zeros(image.shape[:3][::-1], dtype=bool)
        for kind in ("masks", "vessels"):
            if (converted / kind / f"{uid}.nii.gz").is_file():
                hit |= np.asarray(nib.load(str(converted / kind / f"{uid}.nii.gz")).dataobj).transpose(2, 1, 0) > 0
        if hit.any():
            where = np.argwhere(hit)
            lo, hi = np.maximum(where.min(0) - margin, 0), np.minimum(where.max(0) + 1 + margin, hit.shape)
        else:
            lo, hi = np.zeros(3, dtype=int), np.array(hit.shape)
        box = Box3D(*((int(a), int(b)) for a, b in zip(lo, hi)), fallback="" if hit.any() else "whole volume")
        save_crop(image_file, out / "images" / image_file.name, box)
        for kind in ("masks", "vessels"):
            if (converted / kind / f"{uid}.nii.gz").is_file():
                save_crop(converted / kind / f"{uid}.nii.gz", out / kind / f"{uid}.nii.gz", box)
        row = {"SeriesInstanceUID": uid, "fallback": box.fallback, "slices_used": 0, "seconds": 0.0}
        for name, (a, b), step in zip("zyx", box.ranges, spacing):
            row.update({f"{name}0": a, f"{name}1": b, f"{name}0_mm": a * float(step), f"{name}1_mm": b * float(step)})
        rows.append(row)
    write_table(out / "rois.csv", rows)


def prepare_stage2_workspace(root: Path, cohort: Path, dataset: str = "demo") -> StageContext:
    """A workspace whose dataset ``dataset`` (a link to ``cohort``) is converted and cropped: what
    ``train3d`` reads. Returns a context on it (for the layout's paths)."""
    ctx = StageContext.for_folder(root)
    ctx.workspace.datasets.mkdir(parents=True, exist_ok=True)
    (ctx.workspace.datasets / dataset).symlink_to(cohort)
    convert.run({"dataset": dataset, "split": "train", "workers": 1, "seed": 0}, ctx)
    write_ground_truth_rois(ctx, dataset)
    return ctx
