"""Stages ``train3d``, ``finetune1`` and ``finetune2``: one function, three rows of the schedule (MODEL_SPEC 7).

``run(params, ctx)``:

1. builds or reuses the stage-2 nnU-Net dataset (``engine.stage2.dataset.prepare_dataset``);
2. writes this training's plans ``Stage2Plans_<stage>_s<size>_<tag>`` (the tag is a short hash of
   features, blocks and batch size, so that trainings of another shape never share a results folder;
   the stage is ``ctx.stage``, else ``train3d`` without ``init_from`` and ``finetune`` with it), giving
   the results folder ``nnUNet_results/Dataset<id>_Stage2Cube/StageTwoTrainer__<plans>__3d_fullres``;
3. builds ``StageTwoTrainer`` (``engine.stage2.trainer``) with epochs / iterations / learning rate / fold;
4. ``init_from`` (fine-tunes): a checkpoint file or a results folder (the planner fills in the ``train3d``
   job's ``checkpoint`` artefact); only the network weights are loaded (strictly), never the optimizer state. With
   ``ctx.resume`` and a checkpoint of this training present, the run continues from it instead (nnU-Net
   ``--c``: final, else latest, else best) and ``init_from`` is not applied again;
5. trains, runs the end-of-training validation pass, writes ``network.json`` and registers artefacts
   ``model`` (the results folder), ``checkpoint`` (``fold_N/checkpoint_final.pth``) and ``network``
   (``network.json``). The contract for inference is in ``engine.stage2.model_files``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from engine.context import StageContext, input_path
from engine.nnunet_runtime import (TrainerSettings, build_trainer, configure_environment, read_checkpoint,
                                   resume_checkpoint, select_device, train)
from engine.stage2.dataset import BASE_PLANS, CONFIGURATION, dataset_name, network_kwargs, prepare_dataset, \
    stage_plans
from engine.stage2.model_files import CHECKPOINT_NAME, network_spec, write_network_json


def stage_of(params: dict[str, Any], ctx: StageContext) -> str:
    """The stage this job runs (the runner says); for direct calls, guessed from ``init_from``."""
    return ctx.stage or ("finetune" if params["init_from"] else "train3d")


def plans_name(stage: str, params: dict[str, Any]) -> str:
    shape = json.dumps([list(params["features"]), list(params["blocks"]), int(params["batch_size"])])
    return f"{BASE_PLANS}_{stage}_s{int(params['size'])}_{hashlib.sha1(shape.encode()).hexdigest()[:6]}"


def init_checkpoint(ref: str, fold: int | str, ctx: StageContext) -> Path:
    """The checkpoint ``init_from`` names: a checkpoint file or a results folder (one of its folds)."""
    path = input_path("init_from", ref, "a checkpoint or a stage-2 results folder")
    if path.is_dir():
        candidates = [path / CHECKPOINT_NAME, path / f"fold_{fold}" / CHECKPOINT_NAME]
        found = [c for c in candidates if c.is_file()] + sorted(path.glob(f"fold_*/{CHECKPOINT_NAME}"))
        if not found:
            raise FileNotFoundError(f"init_from={ref}: no {CHECKPOINT_NAME} in {path} or its fold_* folders")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"init_from={ref}: checkpoint {path} does not exist")
    return path


def load_initial_weights(trainer: Any, checkpoint: Path, ctx: StageContext) -> None:
    """Weights only (no optimizer state, epoch counter or logs) into an initialised trainer's network."""
    from engine.stage2.trainer import _unwrap

    state = read_checkpoint(checkpoint, trainer.device)
    network = _unwrap(trainer.network)
    try:
        network.load_state_dict(state["network_weights"])
    except RuntimeError as error:
        raise ValueError(f"init_from checkpoint {checkpoint} does not fit this network (features/blocks must "
                         f"match the run it came from): {str(error).splitlines()[0]}") from None
    ctx.reporter.log(f"initialised the network from {checkpoint} (weights only; that run had "
                     f"{state.get('current_epoch', '?')} epochs)")


def cpu_precision(requested: str, device: Any, ctx: StageContext) -> str:
    """``requested``, except bf16 on a CPU for which oneDNN reports no bfloat16 support (it needs at least
    AVX-512; AVX512-BF16 / AMX make it fast): then fp32, said in the log."""
    import torch

    if requested == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        ctx.reporter.log("cpu_precision=bf16: this CPU has no native bfloat16 kernels; training in fp32")
        return "fp32"
    return requested


def _nnunet_paths_match(ctx: StageContext) -> None:
    import nnunetv2.paths as paths

    if Path(paths.nnUNet_results or "") != ctx.workspace.nnunet_results:
        raise RuntimeError(f"nnU-Net was imported in this process for another workspace ({paths.nnUNet_results}); "
                           "run each training stage in its own process")


def run(params: dict[str, Any], ctx: StageContext) -> None:
    configure_environment(ctx.workspace)
    device = select_device(params["device"])
    _nnunet_paths_match(ctx)
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

    from engine.stage2.trainer import StageTwoTrainer

    stage = stage_of(params, ctx)
    preprocessed = prepare_dataset(params, ctx)
    name = plans_name(stage, params)
    plans = stage_plans(load_json(str(preprocessed / f"{BASE_PLANS}.json")), name, params["size"],
                        params["batch_size"], params["features"], params["blocks"])
    save_json(plans, str(preprocessed / f"{name}.json"), sort_keys=False)

    settings = TrainerSettings(epochs=params["epochs"], iterations=params["iterations"],
                               val_iterations=params["val_iterations"], initial_lr=params["initial_lr"])
    fold = "all" if params["fold"] == -1 else params["fold"]
    trainer = build_trainer(StageTwoTrainer, plans, CONFIGURATION, fold,
                            load_json(str(preprocessed / "dataset.json")), device, settings, ctx.reporter,
                            resume=ctx.resume)
    trainer.oversampling = float(params["oversampling"])
    trainer.optimizer_name = params.get("optimizer", "sgd")
    trainer.augmentation = params.get("augmentation", "nnunet")
    trainer.cpu_precision = cpu_precision(params.get("cpu_precision", "fp32"), device, ctx)
    resuming = ctx.resume and resume_checkpoint(trainer.output_folder) is not None
    if params["init_from"] and not resuming:
        trainer.initialize()
        load_initial_weights(trainer, init_checkpoint(params["init_from"], fold, ctx), ctx)
    ctx.reporter.log(f"{stage}: {dataset_name(params['dataset_id'])}, plans {name}, fold {fold}, "
                     f"{params['epochs']} epochs x {params['iterations']} iterations on {device} "
                     f"({trainer.optimizer_name}, {'float16 autocast' if device.type == 'cuda' else trainer.cpu_precision}, "
                     f"augmentation {trainer.augmentation})")
    # written first, so that the checkpoints of an interrupted run can be loaded as well
    model = Path(trainer.output_folder_base)
    spec = network_spec(network_kwargs(params["features"], params["blocks"]), params["size"], stage, fold)
    network_file = write_network_json(model, spec)
    final = train(trainer, resume=ctx.resume, validate=True)

    ctx.reporter.artefact("network", network_file)
    ctx.reporter.artefact("model", model)
    ctx.reporter.artefact("checkpoint", final)
