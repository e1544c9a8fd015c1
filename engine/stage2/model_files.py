"""What a stage-2 results folder holds for inference, and how to rebuild the trained network from it.

Contract (written by ``engine.stage2.train``; read by inference):

``<results>/<Trainer>__<Plans>__3d_fullres/`` (the ``model`` artefact)
    ``network.json``  this module's :func:`network_spec`: ``class`` (import path of the network),
    ``kwargs`` (constructor keyword arguments besides ``in_channels`` / ``deep_supervision``: ``features``,
    ``blocks``, ``strides``, ``kernel_sizes``), ``in_channels``, ``size`` (input edge; the input is
    ``size``^3), ``spacing_mm`` (declared 1 mm), ``axes`` ("z,y,x" of the converted LPS volume, axis 2
    pointing to the patient's left), ``preprocessing`` (a sentence; the function is
    ``engine.stage2.dataset.prepare_image``), ``train_mirror_axes`` ([0, 1]), ``outputs`` (channel order of
    the heads), ``stage``, ``fold`` and ``checkpoint`` (relative path of the final checkpoint).
    ``plans.json`` / ``dataset.json`` nnU-Net's copies; the plans' ``arch_kwargs`` equal ``kwargs`` above.
``fold_<N>/checkpoint_final.pth`` (the ``checkpoint`` artefact)
    nnU-Net's checkpoint dictionary: ``network_weights`` (the state dict, deep-supervision heads included),
    ``init_args`` (plans, configuration, fold, dataset_json), ``current_epoch``, optimizer state, logging.
    Load it with ``engine.nnunet_runtime.read_checkpoint`` (``weights_only=True``).
``fold_<N>/validation/predictions.csv`` and ``summary.json``
    one classification pass over the fold's validation cases after training (probabilities of the 14
    label columns; AUCs and score where computable).

:func:`load_network` does all of it: ``load_network(model_folder_or_checkpoint)`` -> (network in eval
mode without deep supervision, spec).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch

from engine.labels import LOCATIONS, MODALITIES
from engine.nnunet_runtime import read_checkpoint

NETWORK_FILE = "network.json"
CHECKPOINT_NAME = "checkpoint_final.pth"


def network_spec(kwargs: dict[str, Any], size: int, stage: str, fold: int | str, in_channels: int = 1) -> dict[str, Any]:
    """The ``network.json`` content of one trained model (see the module docstring)."""
    return {
        "class": "engine.stage2.network.ResEncoderUNetTwoSegWithCls",
        "kwargs": kwargs,
        "in_channels": in_channels,
        "size": int(size),
        "spacing_mm": [1.0, 1.0, 1.0],
        "axes": "z,y,x of the converted LPS volume (axis 2 points to the patient's left)",
        "preprocessing": "stage-1 crop -> z-score over the whole crop (std >= 1e-8) -> trilinear resize to "
                         "size^3, align_corners=True (engine.stage2.dataset.prepare_image)",
        "train_mirror_axes": [0, 1],
        "outputs": {"cls_present": ["Aneurysm Present"], "cls_locations": list(LOCATIONS),
                    "modality": list(MODALITIES), "seg1": "15 classes: background, vessels 1..13, aneurysm",
                    "seg2": "14 classes: background, vessel k united with the aneurysm at its location"},
        "stage": stage,
        "fold": fold,
        "checkpoint": f"fold_{fold}/{CHECKPOINT_NAME}",
    }


def write_network_json(model_folder: Path, spec: dict[str, Any]) -> Path:
    path = Path(model_folder) / NETWORK_FILE
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(spec, indent=2))
    partial.replace(path)
    return path


def read_network_json(model_folder: Path) -> dict[str, Any]:
    path = Path(model_folder) / NETWORK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {model_folder} a stage-2 results folder (train3d/finetune)?")
    return json.loads(path.read_text())


def build_network(spec: dict[str, Any], deep_supervision: bool = False) -> torch.nn.Module:
    """An untrained network of the architecture ``spec`` describes."""
    module, _, name = spec["class"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(in_channels=int(spec.get("in_channels", 1)), deep_supervision=deep_supervision, **spec["kwargs"])


def load_network(path: Path | str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained network (eval mode, deep supervision off) and its spec, from a results folder (its
    ``network.json`` names the checkpoint) or from a checkpoint file (``network.json`` two levels up)."""
    path = Path(path)
    if path.is_dir():
        spec = read_network_json(path)
        checkpoint = path / spec["checkpoint"]
    else:
        spec = read_network_json(path.parent.parent)
        checkpoint = path
    network = build_network(spec)
    network.load_state_dict(read_checkpoint(checkpoint, device)["network_weights"])
    return network.to(device).eval(), spec
