"""Trained tiny models, shared by the modules that need them (each training runs once per session).

``stage1_trained``: demo cohort -> convert -> stage1-data -> tiny train2d (in process, ~1 min of CPU),
some positive series held out of the 2D dataset. ``stage2_trained``: demo cohort -> convert -> crops
-> train3d -> finetune1 -> finetune2, each a job of the real CLI and runner (``stage2_jobs``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from engine.context import StageContext
from engine.stages import get_stage
from tests.engine.stage2_jobs import SMALL, prepare_stage2_workspace, run_stage

STAGE1_SPACING = "4,4"  # the demo's ~5 mm voxels as ~40 x 40 slices: seconds per epoch on one core


@pytest.fixture(scope="session")
def stage1_trained(demo_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``name`` (dataset), ``ctx`` (its workspace), ``train`` (the train2d reporter: artefacts ``model``,
    ``checkpoint``), ``held_out`` (positives whose vessel masks were kept out), ``converted``."""
    from engine.data import convert
    from engine.stage1 import dataset, train

    ctx = StageContext.for_folder(tmp_path_factory.mktemp("stage1") / "ws")
    name = str(demo_cohort)
    convert.run({"dataset": name, "split": "train", "workers": 1, "seed": 0}, ctx)
    converted = ctx.workspace.converted(name, "train")
    points = pd.read_csv(converted / "localizers_voxel.csv")
    positives = sorted(u for u in points["SeriesInstanceUID"].unique()
                       if (converted / "vessels" / f"{u}.nii.gz").exists())
    held_out = positives[::2]
    stash = ctx.workspace.root / "held_out_vessels"
    stash.mkdir()
    for uid in held_out:
        shutil.move(converted / "vessels" / f"{uid}.nii.gz", stash / f"{uid}.nii.gz")
    dataset.run(get_stage("stage1-data").resolve("tiny", {"dataset": name, "spacing": STAGE1_SPACING}), ctx)

    train_ctx = StageContext.for_folder(ctx.workspace.root, job_id="train2d")
    train.run(get_stage("train2d").resolve("tiny", {"validate": False, "device": "cpu"}), train_ctx)
    return {"name": name, "ctx": ctx, "train": train_ctx.reporter, "held_out": held_out, "converted": converted}


def _artefacts(found: list[dict]) -> dict[str, str]:
    return {e["name"]: e["path"] for e in found if e["type"] == "artefact"}


@pytest.fixture(scope="session")
def stage2_trained(demo_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``root`` (the workspace), ``ctx``, ``jobs`` (stage -> events), ``ids`` (stage -> job id)."""
    root = tmp_path_factory.mktemp("stage2") / "ws"
    ctx = prepare_stage2_workspace(root, demo_cohort)
    ids, jobs = {}, {}
    ids["train3d"], jobs["train3d"] = run_stage(root, "train3d",
                                                {**SMALL, "epochs": 3, "iterations": 3, "val_iterations": 1})
    start = _artefacts(jobs["train3d"])["checkpoint"]  # explicit: not "the latest train3d of the workspace"
    # finetune2 with the demo profile's CPU settings: AdamW, bf16 autocast, mirroring only
    demo = {"optimizer": "adamw", "cpu_precision": "bf16", "augmentation": "mirror"}
    for stage, settings in (("finetune1", {"optimizer": "sgd"}), ("finetune2", demo)):
        ids[stage], jobs[stage] = run_stage(root, stage, {**SMALL, "epochs": 1, "iterations": 2, "val_iterations": 1,
                                                          "init_from": start, **settings})
    return {"root": root, "ctx": ctx, "jobs": jobs, "ids": ids}
