"""The stage-2 nnU-Net trainer (MODEL_SPEC 7): our network and loss inside nnU-Net's training loop.

Import this module only after ``engine.nnunet_runtime.configure_environment`` (it imports nnU-Net's
trainer, which reads its folders from the environment at import time).

What differs from ``nnUNetTrainer`` and why (everything else is nnU-Net's: data loading, the default
3D augmentation, SGD Nesterov momentum 0.99 / weight decay 3e-5, PolyLR 0.9, mixed precision (autocast
and grad scaler) on CUDA only, gradient-norm clipping at 12 on every device as nnU-Net does, so CPU and
GPU runs follow the same optimisation, the 5-fold split, checkpoints):

* network: ``ResEncoderUNetTwoSegWithCls`` built from the plans' ``arch_kwargs`` (nnU-Net's label count
  is not used: the decoders have 15 and 14 channels by design);
* loss: ``StageTwoLoss`` on both decoders and the three heads; classification and modality targets come
  from ``classification.csv`` of the preprocessed folder, looked up by the batch's case ``keys``;
* optimizer: nnU-Net's SGD unless the stage's ``optimizer`` parameter asks for AdamW (the ``demo``
  profile; same PolyLR, see :meth:`StageTwoTrainer.configure_optimizers`);
* ``cpu_precision = "bf16"`` (the ``demo`` profile): on a CPU, the forward pass under bfloat16 autocast and the
  loss in float32 (see :meth:`StageTwoTrainer.precision_context`);
* ``augmentation = "mirror"`` (the ``demo`` profile) keeps only the mirroring of nnU-Net's training transforms
  (see :meth:`StageTwoTrainer.get_training_transforms`);
* mirroring on array axes 0 and 1 only ("onlyMirror01"; a left-right flip would need label swaps);
* the volume is the patch, so every iteration sees it whole and centred (:class:`WholeVolumeDataLoader`; no
  foreground-centred crops, ``oversample_foreground_percent = 0``);
* training cases drawn with replacement with the targeted-oversampling weights
  (``engine.stage2.targets.case_sampling_weights``, positives counted over the whole CSV);
* validation: besides nnU-Net's loss and pseudo-Dice (decoder 1, voxels with known labels only), the
  heads' outputs of the epoch's validation batches are averaged per case and scored: AUC per column
  where the drawn cases hold both classes (skipped columns are logged), the competition score
  (``engine.metrics``) when all 14 columns are scorable, modality accuracy; all reported as metrics;
* the end-of-training validation is one classification pass over every validation case (nnU-Net's
  sliding-window export does not apply to a multi-output network): ``validation/predictions.csv``
  and ``validation/summary.json``;
* checkpoints are written under a temporary name and renamed (a kill never leaves a torn file);
  ``checkpoint_latest`` every ``save_every`` epochs (1 here, nnU-Net: 50);
* ``torch.compile`` only when ``nnUNet_compile`` is set to true explicitly.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from engine.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS
from engine.metrics import KEY, evaluate
from engine.nnunet_runtime import ReportingMixin
from engine.stage2.dataset import MODALITY_COLUMN, read_classification, sampling_probabilities
from engine.stage2.losses import StageTwoLoss
from engine.stage2.network import ResEncoderUNetTwoSegWithCls, StageTwoOutput
from engine.stage2.targets import NUM_CLASSES_1, decoder1_target

#: Names of the loss parts, as reported (``train_loss_<part>``, ``val_loss_<part>``).
LOSS_PARTS = ("seg1", "seg2", "present", "locations", "modality")


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    network = getattr(network, "module", network)  # DDP
    return getattr(network, "_orig_mod", network)  # torch.compile


class WholeVolumeDataLoader(nnUNetDataLoader):
    """nnU-Net's data loader, except that every draw is the whole volume, centred (MODEL_SPEC 7: the volume
    is the patch, no random crop translation).

    Why: nnU-Net's ``get_bbox`` keeps the volume whole only without an ignore label. Ours has one (unknown
    vessel: every case without a vessel mask), and then it centres the patch on a random annotated voxel,
    shifting the volume by up to half its edge and padding the rest with zeros. In a case without a vessel
    mask the annotated voxels are the aneurysm's, so positives came centred on their sac and negatives did
    not: a cue that exists only in training. With nnU-Net's loader the demo's train3d never fitted its
    training cases (``Aneurysm Present`` train loss still 0.55 after 1,500 iterations at 16^3) and scored
    0.50-0.66 held-out AUC (three runs); see ``bench/bench_demo.py`` for the figures with this loader.
    """

    def get_bbox(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):
        """The box that puts the volume's centre on the patch's (the centre the spatial transform crops)."""
        lower = [int(s) // 2 - int(p) // 2 for s, p in zip(data_shape, self.patch_size)]
        return lower, [lb + int(p) for lb, p in zip(lower, self.patch_size)]


def _as_float(output: StageTwoOutput) -> StageTwoOutput:
    """Every tensor of a network output in float32 (after a bf16 autocast forward)."""
    return StageTwoOutput([t.float() for t in output.seg1], [t.float() for t in output.seg2],
                          output.cls_present.float(), output.cls_locations.float(), output.modality.float())


class StageTwoTrainer(ReportingMixin, nnUNetTrainer):
    """nnU-Net trainer for the multi-task stage-2 network; see the module docstring."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.oversample_foreground_percent = 0.0
        self.save_every = 1
        self.classification: pd.DataFrame | None = None
        #: numerator of the targeted oversampling (MODEL_SPEC 7); the stage sets it from its parameters
        self.oversampling = 300.0
        #: "sgd" (the original's) or "adamw"; the stage sets it from its parameters
        self.optimizer_name = "sgd"
        #: "fp32" or "bf16" (CPU only); the stage sets it from its parameters
        self.cpu_precision = "fp32"
        #: "nnunet" (nnU-Net's default 3D pipeline) or "mirror"; the stage sets it from its parameters
        self.augmentation = "nnunet"
        self._val_heads: list[tuple[list[str], np.ndarray, np.ndarray, np.ndarray]] = []
        self._skipped_columns: list[str] | None = None

    # ---- network, loss, data -------------------------------------------------------------------

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        return ResEncoderUNetTwoSegWithCls(in_channels=num_input_channels, deep_supervision=enable_deep_supervision,
                                           **configuration_manager.network_arch_init_kwargs)

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        _unwrap(self.network).deep_supervision = enabled

    def _do_i_compile(self) -> bool:
        return os.environ.get("nnUNet_compile", "").lower() in ("true", "1", "t") and super()._do_i_compile()

    def _build_loss(self) -> StageTwoLoss:
        n_outputs = len(self._get_deep_supervision_scales()) if self.enable_deep_supervision else 1
        return StageTwoLoss(n_outputs).to(self.device)

    def initialize(self) -> None:
        super().initialize()
        self.classification = read_classification(Path(self.preprocessed_dataset_folder_base))

    def configure_optimizers(self):
        """nnU-Net's SGD (Nesterov, momentum 0.99) and PolyLR, or with ``optimizer = "adamw"`` AdamW under the
        same PolyLR. Why AdamW exists: the heads read instance-normalised bottleneck tokens, where a small
        finding changes little but where attention falls, and under SGD they learn that only after far more
        iterations than a CPU demo affords. train3d on the demo cohort at 24^3, Aneurysm Present AUC on its
        51 held-out series (no TTA): SGD at 1e-2, 1,600 iterations: 0.57 (0.55 and 0.53 with the heads'
        rate x10 and x30); AdamW at 1e-3, 1,200 iterations: 0.90. The segmentation learns under both."""
        if self.optimizer_name == "sgd":
            return super().configure_optimizers()
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = (0, 1)
        return rotation, dummy_2d, initial_patch_size, (0, 1)

    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's training transforms; with ``augmentation = "mirror"`` only the mirroring, besides the
        transforms that shape the targets (the spatial transform at rest crops the volume out of its padded
        patch). Why: nnU-Net's rotations, scaling, noise, blur, contrast, low resolution and gamma are
        tuned for 1,000 x 250 iterations at 224^3; in the demo's 1,500 iterations at 16^3 they keep train3d
        from fitting its training cases. One run each (``Aneurysm Present`` train loss at the end, held-out
        AUC without TTA): all transforms 0.42 / 0.63, rotation and scaling only 0.34 / 0.72, mirror only
        0.02 / 0.77."""
        composed = super().get_training_transforms(*args, **kwargs)
        if self.augmentation == "mirror":
            for transform in composed.transforms:
                if isinstance(transform, SpatialTransform):
                    transform.p_rotation = transform.p_scaling = transform.p_elastic_deform = 0
            composed.transforms = [t for t in composed.transforms if not isinstance(t, RandomTransform)]
        return composed

    def get_dataloaders(self):
        """nnU-Net's loaders, with the oversampling probabilities on the training loader."""
        patch_size = self.configuration_manager.patch_size
        ds_scales = self._get_deep_supervision_scales()
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        labels = self.label_manager
        regions = labels.foreground_regions if labels.has_regions else None
        tr_transforms = self.get_training_transforms(
            patch_size, rotation, ds_scales, mirror_axes, dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=self.is_cascaded,
            foreground_labels=labels.foreground_labels, regions=regions, ignore_label=labels.ignore_label)
        val_transforms = self.get_validation_transforms(ds_scales, is_cascaded=self.is_cascaded,
                                                        foreground_labels=labels.foreground_labels, regions=regions,
                                                        ignore_label=labels.ignore_label)
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        probabilities = sampling_probabilities(self.classification, list(dataset_tr.identifiers), self.oversampling)
        dl_tr = WholeVolumeDataLoader(dataset_tr, self.batch_size, initial_patch_size, patch_size, labels,
                                      oversample_foreground_percent=0.0, sampling_probabilities=probabilities,
                                      transforms=tr_transforms)
        dl_val = WholeVolumeDataLoader(dataset_val, self.batch_size, patch_size, patch_size, labels,
                                       oversample_foreground_percent=0.0, transforms=val_transforms)
        workers = get_allowed_n_proc_DA()
        if workers == 0:
            train_gen, val_gen = SingleThreadedAugmenter(dl_tr, None), SingleThreadedAugmenter(dl_val, None)
        else:
            pin = self.device.type == "cuda"
            train_gen = NonDetMultiThreadedAugmenter(dl_tr, None, workers, max(6, workers // 2), None, pin, 0.002)
            val_gen = NonDetMultiThreadedAugmenter(dl_val, None, max(1, workers // 2), max(3, workers // 4), None,
                                                   pin, 0.002)
        next(train_gen)
        next(val_gen)
        return train_gen, val_gen

    def class_targets(self, keys: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Aneurysm Present (B,), locations (B, 13) and modality (B,) of the batch's cases, on the device."""
        rows = self.classification.loc[list(keys)]
        present = torch.tensor(rows[ANEURYSM_PRESENT].to_numpy(), dtype=torch.float32)
        locations = torch.tensor(rows[list(LOCATIONS)].to_numpy(), dtype=torch.float32)
        modality = torch.tensor(rows[MODALITY_COLUMN].to_numpy(), dtype=torch.long)
        return present.to(self.device), locations.to(self.device), modality.to(self.device)

    def precision_context(self):
        """nnU-Net's float16 autocast on CUDA; on a CPU bfloat16 autocast with ``cpu_precision = "bf16"``, else
        none. Why bf16 on a CPU: on this project's 2-core Xeon with AMX (one thread) the demo's network step
        (24^3, batch 2, AdamW) takes 0.060 s instead of 0.092 s, and a whole train step in nnU-Net's loop
        0.104 s instead of 0.119 s (the loss and the data loading do not speed up); train3d learns as well
        (``Aneurysm Present`` AUC 0.89 against 0.93 after 1,500 iterations, one run each). Convolutions,
        attention and linear layers run in bf16; the loss is computed in float32 (:meth:`_forward_loss`)."""
        if self.device.type == "cuda":
            return autocast("cuda", enabled=True)
        if self.cpu_precision == "bf16":
            return autocast("cpu", dtype=torch.bfloat16)
        return dummy_context()

    def _forward_loss(self, batch: dict):
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        heads = self.class_targets(batch["keys"])
        if self.device.type == "cuda":  # nnU-Net's way: the loss under autocast too
            with self.precision_context():
                output = self.network(data)
                parts = self.loss(output, target, *heads)
            return output, target, parts
        with self.precision_context():
            output = self.network(data)
        output = _as_float(output)
        return output, target, self.loss(output, target, *heads)

    @staticmethod
    def _parts(parts) -> np.ndarray:
        return np.array([float(getattr(parts, name)) for name in LOSS_PARTS], dtype=np.float64)

    # ---- training ------------------------------------------------------------------------------

    def train_step(self, batch: dict) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        _, _, parts = self._forward_loss(batch)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(parts.total).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            parts.total.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        return {"loss": parts.total.detach().cpu().numpy(), "parts": self._parts(parts)}

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        self._report_parts("train", train_outputs)

    def _report_parts(self, prefix: str, outputs: list[dict]) -> None:
        if self.reporter is None or not outputs:
            return
        means = np.mean([o["parts"] for o in outputs], axis=0)
        for name, value in zip(LOSS_PARTS, means):
            self.reporter.metric(f"{prefix}_loss_{name}", float(value), self.current_epoch)

    # ---- validation ----------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_heads = []

    def validation_step(self, batch: dict) -> dict:
        output, target, parts = self._forward_loss(batch)
        logits = output.seg1[0].float()
        labels = target[0] if isinstance(target, list) else target
        truth = decoder1_target(labels[:, 0] if labels.ndim == logits.ndim else labels)
        known = truth < NUM_CLASSES_1
        predicted = torch.zeros_like(logits)
        predicted.scatter_(1, logits.argmax(1, keepdim=True), 1)
        axes = [0] + list(range(2, logits.ndim))
        tp, fp, fn, _ = get_tp_fp_fn_tn(predicted, torch.where(known, truth, 0)[:, None], axes=axes,
                                        mask=known[:, None].float())
        self._val_heads.append((list(batch["keys"]), output.cls_present.float().cpu().numpy().reshape(-1),
                                output.cls_locations.float().cpu().numpy(), output.modality.float().cpu().numpy()))
        return {"loss": parts.total.detach().cpu().numpy(), "tp_hard": tp.cpu().numpy()[1:],
                "fp_hard": fp.cpu().numpy()[1:], "fn_hard": fn.cpu().numpy()[1:], "parts": self._parts(parts)}

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        super().on_validation_epoch_end(val_outputs)
        self._report_parts("val", val_outputs)
        if self._val_heads:
            self._report_heads(*self._head_frames(self._val_heads), prefix="val", step=self.current_epoch)

    def _head_frames(self, records) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
        """Per-case probabilities (logits averaged over repeated draws), truth, and modality hits per draw."""
        logits: dict[str, list[np.ndarray]] = defaultdict(list)
        hits = []
        for keys, present, locations, modality in records:
            truth_modality = self.classification.loc[keys, MODALITY_COLUMN].to_numpy()
            hits.extend(modality.argmax(1) == truth_modality)
            for i, key in enumerate(keys):
                logits[key].append(np.concatenate([locations[i], present[i:i + 1]]))
        cases = sorted(logits)
        mean = np.stack([np.mean(logits[c], axis=0) for c in cases])
        predictions = pd.DataFrame(1 / (1 + np.exp(-mean)), index=cases, columns=list(LABEL_COLUMNS))
        truth = self.classification.loc[cases, list(LABEL_COLUMNS)]
        return predictions, truth, np.asarray(hits, dtype=bool)

    def _report_heads(self, predictions: pd.DataFrame, truth: pd.DataFrame, hits: np.ndarray, prefix: str,
                      step: int) -> dict[str, Any]:
        by_case = {name: frame.rename_axis(KEY).reset_index() for name, frame in (("p", predictions), ("t", truth))}
        result = evaluate(by_case["p"], by_case["t"], skip_single_class=True)
        aucs, skipped, score = result["auc"], result["single_class_columns"], result["score"]
        summary = {"cases": len(truth), "auc": aucs, "skipped_columns": skipped, "score": score,
                   "modality_accuracy": float(hits.mean()) if hits.size else None}
        if skipped != self._skipped_columns:
            message = (f"{prefix}: AUC not computable ({len(truth)} cases, single class) for: {', '.join(skipped)}"
                       if skipped else f"{prefix}: every column has both classes; scoring all 14")
            self.print_to_log_file(message)
            if self.reporter is not None:
                self.reporter.log(message)
            self._skipped_columns = skipped
        self.print_to_log_file(f"{prefix} score {score}, modality accuracy {summary['modality_accuracy']}, "
                               f"AUCs {json.dumps({k: round(v, 4) for k, v in aucs.items()})}")
        if self.reporter is not None:
            self.reporter.metric(f"{prefix}_cases", float(len(truth)), step)
            for column, value in aucs.items():
                self.reporter.metric(f"{prefix}_auc/{column}", value, step)
            if score is not None:
                self.reporter.metric(f"{prefix}_score", score, step)
            if hits.size:
                self.reporter.metric(f"{prefix}_modality_acc", float(hits.mean()), step)
        return summary

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """One classification pass over every validation case (no augmentation, no TTA); writes
        ``validation/predictions.csv`` (probabilities) and ``validation/summary.json``; reports
        ``final_val_*`` metrics."""
        self.set_deep_supervision_enabled(False)
        network = _unwrap(self.network).eval()
        _, val_keys = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        patch = [int(p) for p in self.configuration_manager.patch_size]
        records = []
        with torch.no_grad():
            for key in val_keys:
                data = np.asarray(dataset.load_case(key)[0][:], dtype=np.float32)
                pad = [(0, 0)] + [((p - s) // 2, p - s - (p - s) // 2) for p, s in zip(patch, data.shape[1:])]
                if any(before < 0 for before, _ in pad):
                    raise ValueError(f"case {key}: preprocessed shape {data.shape[1:]} exceeds the patch {patch}")
                x = torch.from_numpy(np.pad(data, pad))[None].to(self.device)
                with self.precision_context():
                    heads = network.classify(x, with_modality=True)
                records.append(([key], heads.cls_present.float().cpu().numpy().reshape(-1),
                                heads.cls_locations.float().cpu().numpy(), heads.modality.float().cpu().numpy()))
        self.set_deep_supervision_enabled(True)
        folder = Path(self.output_folder) / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        predictions, truth, hits = self._head_frames(records)
        self._skipped_columns = None
        summary = self._report_heads(predictions, truth, hits, prefix="final_val", step=self.current_epoch - 1)
        predictions.rename_axis("SeriesInstanceUID").to_csv(folder / "predictions.csv")
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))

    # ---- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self, filename: str) -> None:
        partial = f"{filename}.partial"
        super().save_checkpoint(partial)
        if os.path.isfile(partial):
            os.replace(partial, filename)
