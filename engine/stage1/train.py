"""Stage ``train2d``: nnU-Net 2D planning, preprocessing and training of the vessel-box model.

The steps of ``nnUNetv2_plan_and_preprocess -c 2d --verify_dataset_integrity`` and
``nnUNetv2_train <id> 2d <fold>``, driven from here so that the trainer object is built by our code
(:mod:`engine.nnunet_runtime`) and reports per-epoch metrics. Plans come from nnU-Net's
``ExperimentPlanner``; a ``features`` / ``batch_size`` override is saved as a plans file of its own
(``nnUNetPlans_f8-16-32_b4``) that shares the preprocessed data, so the result is an ordinary
results folder ``nnUNetTrainer__<plans>__2d`` that nnU-Net's own predictor loads.

Resume (``ctx.resume``) keeps plans and preprocessed data and continues from the checkpoint nnU-Net's
``--c`` would pick; asking for more epochs than a finished run had continues it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from engine.context import StageContext
from engine.nnunet_runtime import (TrainerSettings, build_trainer, configure_environment, edit_plans,
                                   reporting_trainer, select_device, train)
from engine.stage1.dataset import dataset_name

CONFIGURATION = "2d"
BASE_PLANS = "nnUNetPlans"


def plans_name(features: list[int], batch_size: int) -> str:
    """The plans identifier: nnU-Net's own name, or one that names the overrides."""
    tags = ([f"f{'-'.join(map(str, features))}"] if features else []) + ([f"b{batch_size}"] if batch_size else [])
    return "_".join([BASE_PLANS, *tags])


def plan_and_preprocess(dataset_id: int, name: str, features: list[int], batch_size: int, ctx: StageContext) -> None:
    """Integrity check, fingerprint, nnU-Net's 2D plan (+ overrides) and preprocessing, from scratch."""
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.configuration import default_num_processes
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprint_dataset,
                                                                      plan_experiment_dataset, preprocess_dataset)

    folder = ctx.workspace.nnunet_preprocessed / dataset_name(dataset_id)
    # a rebuilt raw dataset invalidates the old split and ground truth copies
    (folder / "splits_final.json").unlink(missing_ok=True)
    shutil.rmtree(folder / "gt_segmentations", ignore_errors=True)
    ctx.reporter.log("verifying the dataset and extracting its fingerprint")
    extract_fingerprint_dataset(dataset_id, num_processes=default_num_processes, check_dataset_integrity=True,
                                clean=True, verbose=False, show_progress_bar=False)
    ctx.reporter.log("planning")
    # the planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0 (= augment in-process)
    augmenters = os.environ.get("nnUNet_n_proc_DA")
    os.environ["nnUNet_n_proc_DA"] = str(max(1, int(augmenters or 1)))
    try:
        plans, identifier = plan_experiment_dataset(dataset_id)
    finally:
        if augmenters is None:
            os.environ.pop("nnUNet_n_proc_DA")
        else:
            os.environ["nnUNet_n_proc_DA"] = augmenters
    if name != identifier:
        edited = edit_plans(load_json(str(folder / f"{identifier}.json")), CONFIGURATION, batch_size, features)
        edited["plans_name"] = name
        save_json(edited, str(folder / f"{name}.json"), sort_keys=False)
    ctx.reporter.log("preprocessing")
    preprocess_dataset(dataset_id, identifier, (CONFIGURATION,), (default_num_processes,), verbose=False,
                       show_progress_bar=False)


def run(params: dict[str, Any], ctx: StageContext) -> None:
    configure_environment(ctx.workspace)
    device = select_device(params["device"])
    from batchgenerators.utilities.file_and_folder_operations import load_json

    dataset_id = params["dataset_id"]
    raw = ctx.workspace.nnunet_raw / dataset_name(dataset_id)
    if not (raw / "dataset.json").is_file():
        raise FileNotFoundError(f"{raw} has no dataset.json; run stage1-data with dataset_id={dataset_id} first")
    preprocessed = ctx.workspace.nnunet_preprocessed / dataset_name(dataset_id)
    name = plans_name(params["features"], params["batch_size"])
    plans_file = preprocessed / f"{name}.json"
    if ctx.resume and plans_file.is_file():
        ctx.reporter.log(f"resume: reusing {plans_file} and its preprocessed data")
    else:
        plan_and_preprocess(dataset_id, name, params["features"], params["batch_size"], ctx)

    settings = TrainerSettings(epochs=params["epochs"], iterations=params["iterations"],
                               val_iterations=params["val_iterations"], initial_lr=params["initial_lr"])
    fold = "all" if params["fold"] == -1 else params["fold"]
    trainer = build_trainer(reporting_trainer(), load_json(str(plans_file)), CONFIGURATION, fold,
                            load_json(str(preprocessed / "dataset.json")), device, settings, ctx.reporter,
                            resume=ctx.resume)
    final = train(trainer, resume=ctx.resume, validate=params["validate"])

    summary = Path(trainer.output_folder) / "validation" / "summary.json"
    if summary.is_file():
        dice = json.loads(summary.read_text())["foreground_mean"]["Dice"]
        ctx.reporter.metric("val_dice", float(dice), trainer.num_epochs - 1)
    ctx.reporter.artefact("model", trainer.output_folder_base)
    ctx.reporter.artefact("checkpoint", final)
