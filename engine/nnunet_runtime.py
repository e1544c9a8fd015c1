"""Running nnU-Net v2 from our stages: environment, trainer objects, resume, predictors.

Shared by stage 1 (2D vessel box, ``engine.stage1.train``) and stage 2 (3D multi-task trainer).
Why it exists:

* nnU-Net reads ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` and its process
  counts from environment variables, partly at import time, so :func:`configure_environment` must
  run before anything imports ``nnunetv2``. Nothing in this module imports nnU-Net at module level.
* nnU-Net's by-name trainer lookup imports every trainer module, and some of those need a
  torchvision that does not import beside the CPU torch wheel. We build trainer objects ourselves
  (:func:`build_trainer`) and hand predictors the class (:func:`load_predictor`).
* Jobs report through a :class:`~engine.reporter.Reporter`; :class:`ReportingMixin` turns
  nnU-Net's own per-epoch log into metric and progress events.

Typical use (inside a stage function, after ``configure_environment``)::

    trainer_cls = reporting_trainer()                       # nnUNetTrainer + reporting, same name
    trainer = build_trainer(trainer_cls, plans, "2d", fold, dataset_json, device,
                            TrainerSettings(epochs=3, iterations=10), ctx.reporter)
    final = train(trainer, resume=ctx.resume)
    predictor = load_predictor(trainer.output_folder_base, device=device)
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from engine.context import WorkspaceLayout
from engine.reporter import Reporter

if TYPE_CHECKING:  # only for annotations; importing nnunetv2 here would freeze its environment
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

#: nnU-Net's ``--c`` order: the final checkpoint, else the latest periodic one, else the best one.
RESUME_ORDER = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


def configure_environment(workspace: WorkspaceLayout, processes: int | None = None) -> dict[str, str]:
    """Point nnU-Net at the workspace and size its worker pools; call before importing nnunetv2.

    ``processes`` (default: CPU count, at most 8) is nnU-Net's worker count for fingerprinting,
    preprocessing and export; data augmentation gets ``processes - 1`` workers, so a 2-core
    machine augments in the main process. The three folders always come from the workspace; process
    counts already set in the environment win, so a user can still tune them. Returns the values.
    """
    cores = os.cpu_count() or 1
    n = max(1, min(processes or cores, 8))
    values = dict(workspace.nnunet_env())
    for folder in values.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    os.environ.update(values)
    for key, default in (("nnUNet_def_n_proc", str(n)), ("nnUNet_n_proc_DA", str(0 if n <= 2 else n - 1))):
        values[key] = os.environ.setdefault(key, default)
    return values


def case_listing(cases: Sequence[str], file_ending: str = ".nii.gz") -> dict[str, dict[str, Any]]:
    """The ``dataset`` entry of a raw dataset.json: every case's image and label file, relative to it.

    With this entry nnU-Net reads the file lists from dataset.json instead of matching file names in
    a 12-process ``multiprocessing.Pool`` (``create_lists_from_splitted_dataset_folder``); that pool's
    ``terminate`` can hang for ever when a worker is killed holding the queue lock, which happened to
    the demo's train3d on a loaded 2-core machine.
    """
    return {case: {"images": [f"imagesTr/{case}_0000{file_ending}"], "label": f"labelsTr/{case}{file_ending}"}
            for case in cases}


def select_device(name: str = "auto") -> "torch.device":
    """``auto`` = CUDA when available, else CPU; ``cuda`` without a GPU is an error, not a silent CPU run."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was requested but torch sees no CUDA device; use device=cpu or auto")
    if name not in ("cuda", "cpu"):
        raise ValueError(f"unknown device {name!r}; use auto, cuda or cpu")
    if name == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # leave a core to data loading and the rest of the machine: with every core busy, torch's
        # OpenMP threads spin against each other (10x slower epochs seen on a shared 2-core box)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
    return torch.device(name)


@dataclass
class TrainerSettings:
    """Hyper-parameters set as attributes on a freshly built trainer (before ``initialize``).

    None keeps nnU-Net's own value. Batch size and network width live in the plans instead
    (:func:`edit_plans`), because nnU-Net reads them from there when it initialises.
    """

    epochs: int | None = None
    iterations: int | None = None
    val_iterations: int | None = None
    initial_lr: float | None = None
    #: Epochs between ``checkpoint_latest.pth`` writes (nnU-Net: 50).
    save_every: int | None = None

    def apply(self, trainer: Any) -> None:
        for attribute, value in (
            ("num_epochs", self.epochs),
            ("num_iterations_per_epoch", self.iterations),
            ("num_val_iterations_per_epoch", self.val_iterations),
            ("initial_lr", self.initial_lr),
            ("save_every", self.save_every),
        ):
            if value is not None:
                setattr(trainer, attribute, value)


def edit_plans(plans: dict, configuration: str, batch_size: int = 0, features: Sequence[int] = ()) -> dict:
    """A copy of ``plans`` with another batch size and/or encoder width for one configuration.

    ``features`` gives the features per encoder stage; fewer stages than planned drop the deepest
    ones (kernel sizes, strides and convolutions per stage are cut to match), so a tiny network
    still fits the planned patch size. 0 / empty keep nnU-Net's plan.
    """
    plans = copy.deepcopy(plans)
    config = plans["configurations"][configuration]
    if "inherits_from" in config:
        raise ValueError(f"configuration {configuration} inherits from another; edit that one")
    if batch_size:
        config["batch_size"] = int(batch_size)
    if features:
        arch = config["architecture"]["arch_kwargs"]
        planned = int(arch["n_stages"])
        n = len(features)
        if n > planned:
            raise ValueError(f"{n} feature stages given but the plan has only {planned} (patch too small)")
        arch["n_stages"] = n
        arch["features_per_stage"] = [int(f) for f in features]
        for key in ("kernel_sizes", "strides", "n_conv_per_stage"):
            arch[key] = arch[key][:n]
        arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][: n - 1]
    return plans


def _skip_plot(output_folder: str) -> None:
    """Stands in for ``logger.plot_progress_png`` on all but the last epoch (see ``ReportingMixin``)."""


class ReportingMixin:
    """Reports nnU-Net's per-epoch log to a Reporter; put it first: ``class T(ReportingMixin, nnUNetTrainer)``.

    Metrics (step = epoch): ``train_loss``, ``val_loss``, ``pseudo_dice`` (mean foreground),
    ``ema_pseudo_dice``, ``lr``, ``epoch_time`` (s); progress = finished epochs of ``num_epochs``.
    Metrics nnU-Net's logger does not know (stage 2's validation AUCs) go out through
    :meth:`report_metric`, e.g. from ``on_validation_epoch_end``. ``progress.png`` is drawn after the
    last epoch only.
    """

    reporter: Reporter | None = None
    #: nnU-Net logger key -> metric name
    reported_keys: dict[str, str] = {
        "train_losses": "train_loss",
        "val_losses": "val_loss",
        "mean_fg_dice": "pseudo_dice",
        "ema_fg_dice": "ema_pseudo_dice",
        "lrs": "lr",
    }

    def report_metric(self, name: str, value: float) -> None:
        """Report one more scalar for the current epoch (no-op without a reporter)."""
        if self.reporter is not None:
            self.reporter.metric(name, float(value), self.current_epoch)

    def on_epoch_end(self) -> None:
        epoch = self.current_epoch
        if epoch == self.num_epochs - 1:
            super().on_epoch_end()  # logs, checkpoints, progress.png, then increments current_epoch
        else:
            # nnU-Net draws progress.png (3000 x 5400 pixels) after every epoch: about a second each time
            # on a CPU, as long as a demo epoch. The reporter carries the same curves; draw it once, at the end.
            self.logger.plot_progress_png = _skip_plot
            try:
                super().on_epoch_end()
            finally:
                del self.logger.plot_progress_png
        if self.reporter is None:
            return
        values = self.logger.local_logger.my_fantastic_logging
        for key, name in self.reported_keys.items():
            if len(values.get(key, ())) > epoch:
                self.reporter.metric(name, float(values[key][epoch]), epoch)
        start, end = values["epoch_start_timestamps"], values["epoch_end_timestamps"]
        if len(end) > epoch:
            self.reporter.metric("epoch_time", float(end[epoch] - start[epoch]), epoch)
        self.reporter.progress(epoch + 1, self.num_epochs, f"epoch {epoch + 1}/{self.num_epochs}")

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """nnU-Net's loader, but reading the file with ``weights_only=True`` (nnU-Net uses False)."""
        checkpoint = filename_or_checkpoint
        if not isinstance(checkpoint, dict):
            checkpoint = read_checkpoint(checkpoint, self.device)
        if not self.was_initialized:
            self.initialize()
        own = set(self.network.state_dict())
        weights = {k[7:] if k.startswith("module.") and k not in own else k: v
                   for k, v in checkpoint["network_weights"].items()}
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get(
            "inference_allowed_mirroring_axes", self.inference_allowed_mirroring_axes)
        network = self.network.module if self.is_ddp else self.network
        getattr(network, "_orig_mod", network).load_state_dict(weights)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])


_REPORTING_CLASSES: dict[type, type] = {}


def reporting_trainer(base: type | None = None) -> type:
    """``base`` (default nnU-Net's ``nnUNetTrainer``) with :class:`ReportingMixin`, under the same name.

    Keeping the name keeps the results folder (``nnUNetTrainer__nnUNetPlans__2d``) and the
    checkpoint's ``trainer_name`` exactly nnU-Net's, so nnU-Net's own predictor loads the model
    with its stock class (the mixin changes training, never the network). A stage-2 trainer with
    its own architecture simply subclasses ``(ReportingMixin, ItsBase)`` under its own name.
    """
    if base is None:
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as base
    if base not in _REPORTING_CLASSES:
        _REPORTING_CLASSES[base] = type(base.__name__, (ReportingMixin, base),
                                        {"__module__": __name__, "__doc__": f"{base.__name__} reporting to a Reporter."})
    return _REPORTING_CLASSES[base]


def build_trainer(trainer_class: type, plans: dict, configuration: str, fold: int | str, dataset_json: dict,
                  device: "torch.device", settings: TrainerSettings | None = None,
                  reporter: Reporter | None = None, resume: bool = False) -> Any:
    """Instantiate a trainer directly (no by-name lookup) and apply the settings.

    ``fold`` is an int or ``"all"``. ``resume`` only tells nnU-Net's logger to append;
    :func:`train` loads the checkpoint.
    """
    plans = copy.deepcopy(plans)
    plans["continue_training"] = resume  # nnU-Net 2.8 pops this key in __init__ (older ones ignore it)
    trainer = trainer_class(plans=plans, configuration=configuration, fold=fold, dataset_json=dataset_json,
                            device=device)
    (settings or TrainerSettings()).apply(trainer)
    trainer.reporter = reporter
    return trainer


def resume_checkpoint(fold_folder: Path | str) -> Path | None:
    """The checkpoint nnU-Net's ``--c`` would continue from, or None for a fresh start."""
    for name in RESUME_ORDER:
        path = Path(fold_folder) / name
        if path.is_file():
            return path
    return None


def read_checkpoint(path: Path | str, device: "torch.device | str" = "cpu") -> dict:
    """Load an nnU-Net checkpoint with ``weights_only=True``.

    nnU-Net's checkpoints hold numpy scalars (logged losses) and the trainer's init arguments
    besides tensors; exactly those types are allow-listed, nothing executable.
    """
    import numpy as np
    import torch

    numpy_core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed it
    allowed = [np.dtype, numpy_core.multiarray.scalar, torch.device]
    allowed += [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    with torch.serialization.safe_globals(allowed):
        return torch.load(Path(path), map_location=device, weights_only=True)


def train(trainer: Any, resume: bool = False, validate: bool = True) -> Path:
    """Run (or continue) a training; returns the final checkpoint.

    With ``resume`` the checkpoint picked by :func:`resume_checkpoint` is loaded first (a finished
    run with more epochs requested continues from its final checkpoint, like ``--c``).
    ``validate`` runs nnU-Net's full-case validation afterwards (``validation/summary.json``).
    """
    reporter = getattr(trainer, "reporter", None)
    checkpoint = resume_checkpoint(trainer.output_folder) if resume else None
    if resume and reporter is not None:
        reporter.log(f"resuming from {checkpoint}" if checkpoint else "resume: no checkpoint yet, starting fresh")
    if checkpoint is not None:
        trainer.load_checkpoint(str(checkpoint))
    started = time.monotonic()
    trainer.run_training()
    if reporter is not None:
        reporter.log(f"training finished after {time.monotonic() - started:.1f} s")
    if validate:
        trainer.perform_actual_validation(False)
    return Path(trainer.output_folder) / "checkpoint_final.pth"


def load_predictor(model_folder: Path | str, folds: Sequence[int | str] | None = None,
                   checkpoint_name: str = "checkpoint_final.pth", trainer_class: type | None = None,
                   device: "torch.device | None" = None, **predictor_kwargs: Any) -> "nnUNetPredictor":
    """An ``nnUNetPredictor`` for a results folder, built with our trainer class (no by-name lookup).

    ``model_folder`` is ``<Trainer>__<Plans>__<config>``; ``folds`` None = every ``fold_*`` with
    that checkpoint. The network is built by ``trainer_class.build_network_architecture`` (default
    nnU-Net's ``nnUNetTrainer``) and holds the first fold's weights; the others stay in
    ``predictor.list_of_parameters`` as nnU-Net keeps them. ``predictor_kwargs`` go to
    ``nnUNetPredictor`` (tile_step_size, use_gaussian, use_mirroring, ...).
    """
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    if trainer_class is None:
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as trainer_class
    model_folder = Path(model_folder)
    device = device or select_device("auto")
    if folds is None:
        folds = sorted((p.name[len("fold_"):] for p in model_folder.glob("fold_*") if (p / checkpoint_name).is_file()),
                       key=lambda f: (not f.isdigit(), f.zfill(4)))
    if not folds:
        raise FileNotFoundError(f"no fold_*/{checkpoint_name} in {model_folder}; is it an nnU-Net results folder?")
    dataset_json = load_json(str(model_folder / "dataset.json"))
    plans_manager = PlansManager(load_json(str(model_folder / "plans.json")))
    checkpoints = [read_checkpoint(model_folder / f"fold_{f}" / checkpoint_name) for f in folds]
    configuration = plans_manager.get_configuration(checkpoints[0]["init_args"]["configuration"])
    network = trainer_class.build_network_architecture(
        plans_manager, configuration, determine_num_input_channels(plans_manager, configuration, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    parameters = [c["network_weights"] for c in checkpoints]
    network.load_state_dict(parameters[0])
    predictor_kwargs.setdefault("allow_tqdm", False)
    predictor = nnUNetPredictor(device=device, **predictor_kwargs)
    predictor.manual_initialization(network.to(device).eval(), plans_manager, configuration, parameters, dataset_json,
                                    trainer_class.__name__, checkpoints[0].get("inference_allowed_mirroring_axes"))
    return predictor
