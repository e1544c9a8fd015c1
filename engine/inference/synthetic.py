"""Untrained model folders in the real on-disk contracts, for tests, benchmarks and dry runs.

Inference timing does not depend on what a network learnt, and most inference properties (columns,
left/right swap, fallbacks, file handling) do not either, so tests and ``bench/bench_inference.py``
use these folders instead of hours of training:

* :func:`write_stage2_model`: a stage-2 results folder exactly as ``engine.stage2.train`` registers it
  (``network.json`` from :func:`engine.stage2.model_files.network_spec` + ``fold_N/checkpoint_final.pth``
  in nnU-Net's checkpoint layout), holding the seeded random initialisation of the network.
* :func:`write_threshold_stage1_model`: a stage-1 nnU-Net 2D results folder (``plans.json``,
  ``dataset.json``, ``fold_0/checkpoint_final.pth``) whose ``PlainConvUNet`` has hand-set weights that
  make it a *pointwise* detector: a pixel is "vessel box" when, after the slice z-score, it stays above
  the canvas mean through the network's instance norms (in practice: the bright part of a slice with a
  dark background). A random 2D network would give an arbitrary box; this one gives a box that a test
  can predict, and, being pointwise with global statistics, exactly mirrors when its input is mirrored.
  nnU-Net's own predictor (``engine.nnunet_runtime.load_predictor``) loads it like a trained model.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engine.stage2.dataset import network_kwargs
from engine.stage2.model_files import CHECKPOINT_NAME, build_network, network_spec, write_network_json

STAGE1_FOLDER = "nnUNetTrainer__nnUNetPlans__2d"
STAGE2_FOLDER = "nnUNetTrainerStage2__Stage2Plans__3d_fullres"


def _checkpoint(weights: dict[str, torch.Tensor], configuration: str, fold: int, plans: dict[str, Any],
                dataset_json: dict[str, Any], trainer_name: str) -> dict[str, Any]:
    """nnU-Net's checkpoint dictionary (``nnUNetTrainer.save_checkpoint``) for weights never trained."""
    return {
        "network_weights": weights,
        "optimizer_state": {},
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": 0,
        "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset_json},
        "trainer_name": trainer_name,
        "inference_allowed_mirroring_axes": None,
    }


def _save(obj: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if isinstance(obj, (dict, list)) and path.suffix == ".json":
        partial.write_text(json.dumps(obj, indent=2))
    else:
        torch.save(obj, partial)
    partial.replace(path)
    return path


def write_stage2_model(root: Path | str, features: Sequence[int], blocks: Sequence[int], size: int,
                       seed: int = 0, fold: int = 0, stage: str = "random") -> Path:
    """A stage-2 results folder with a seeded random network; returns the folder (the ``model`` artefact)."""
    folder = Path(root) / STAGE2_FOLDER
    spec = network_spec(network_kwargs(features, blocks), size, stage, fold)
    torch.manual_seed(seed)
    network = build_network(spec)
    dataset_json = {"channel_names": {"0": "zscore"}, "labels": {"background": 0}, "file_ending": ".nii.gz"}
    _save(_checkpoint(network.state_dict(), "3d_fullres", fold, {}, dataset_json, "nnUNetTrainerStage2"),
          folder / spec["checkpoint"])
    _save(dataset_json, folder / "dataset.json")
    write_network_json(folder, spec)
    return folder


def stage1_plans(patch: Sequence[int], spacing: Sequence[float], features: Sequence[int]) -> dict[str, Any]:
    """nnU-Net plans with one 2D ``PlainConvUNet`` configuration (the layout nnU-Net's planner writes)."""
    n = len(features)
    return {
        "dataset_name": "Dataset999_ThresholdBox",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [999.0, *map(float, spacing)],
        "original_median_shape_after_transp": [1, *map(int, patch)],
        "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"mean": 0.0, "std": 1.0}},
        "configurations": {
            "2d": {
                "data_identifier": "nnUNetPlans_2d",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [int(p) for p in patch],
                "median_image_size_in_voxels": [float(p) for p in patch],
                "spacing": [float(s) for s in spacing],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                       "force_separate_z": None},
                "batch_dice": True,
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {
                        "n_stages": n,
                        "features_per_stage": [int(f) for f in features],
                        "conv_op": "torch.nn.modules.conv.Conv2d",
                        "kernel_sizes": [[3, 3]] * n,
                        "strides": [[1, 1]] + [[2, 2]] * (n - 1),
                        "n_conv_per_stage": [2] * n,
                        "n_conv_per_stage_decoder": [2] * (n - 1),
                        "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
                        "dropout_op": None,
                        "dropout_op_kwargs": None,
                        "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True},
                    },
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
            }
        },
    }


def threshold_weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights that turn a 2-class ``PlainConvUNet`` into the pointwise detector of the module docstring.

    Every convolution is zero except for the centre tap carrying channel 0 through encoder stage 0, the
    skip half of the last decoder stage and the last segmentation layer (foreground logit = channel 0,
    background logit = 0). Deeper stages output zeros, which instance norm keeps at zero. Set on the
    modules themselves: DNA registers each conv twice (``conv`` and ``all_modules``) in the state dict.
    """
    convs = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)

    def centre(conv: torch.nn.Module, out_channel: int, in_channel: int) -> None:
        middle = tuple(s // 2 for s in conv.weight.shape[2:])
        conv.weight[(out_channel, in_channel, *middle)] = 1.0

    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, convs):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
        stage0 = [m for m in network.encoder.stages[0].modules() if isinstance(m, torch.nn.Conv2d)]
        last = network.decoder.stages[-1]
        decoder = [m for m in last.modules() if isinstance(m, torch.nn.Conv2d)]
        for conv in stage0:
            centre(conv, 0, 0)
        centre(decoder[0], 0, decoder[0].weight.shape[1] // 2)  # input = cat(upsampled deep path, skip 0)
        for conv in decoder[1:]:
            centre(conv, 0, 0)
        centre(network.decoder.seg_layers[-1], 1, 0)
    return network.state_dict()


def write_threshold_stage1_model(root: Path | str, patch: Sequence[int] = (64, 64),
                                 spacing: Sequence[float] = (1.0, 1.0), features: Sequence[int] = (4, 8, 16)) -> Path:
    """A stage-1 results folder (``nnUNetTrainer__nnUNetPlans__2d``) holding the threshold network."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    folder = Path(root) / STAGE1_FOLDER
    plans = stage1_plans(patch, spacing, features)
    dataset_json = {"channel_names": {"0": "zscore"}, "labels": {"background": 0, "vessel_box": 1},
                    "numTraining": 0, "file_ending": ".nii.gz"}
    arch = plans["configurations"]["2d"]["architecture"]
    network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                     1, 2, allow_init=True, deep_supervision=False)
    _save(plans, folder / "plans.json")
    _save(dataset_json, folder / "dataset.json")
    _save(_checkpoint(threshold_weights(network), "2d", 0, plans, dataset_json, "nnUNetTrainer"),
          folder / "fold_0" / CHECKPOINT_NAME)
    return folder
