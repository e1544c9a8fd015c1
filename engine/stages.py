"""The stage table: every pipeline step, its typed parameters and the function that runs it.

This table is the single definition of a stage. The CLI (``rsna-tui run --stage NAME``), the
TUI launch form and the pipeline runner are all generated from it; parameter values come from the
profiles in ``engine/profiles.toml``. Stage functions are named as ``"module:function"`` and only
imported when a job runs, so listing stages never imports torch or nnU-Net.

A stage function has the signature ``fn(params: dict[str, Any], ctx: StageContext) -> None`` and
raises on failure; whatever it registers through ``ctx.reporter`` becomes the job's record.

Each stage also declares its :class:`Input` s: which upstream stage it consumes, with which of its own
parameter values (``match``) or fixed values (``fixed``), and which artefact of that job fills which of
its parameters. A parameter that an input fills holds the upstream stage's name in the profiles
(``roi.model = "train2d"``); the planner (``rsna_tui.jobs.planner``) replaces it by the artefact's
path, so a stage function only ever receives explicit paths. Inputs without a parameter are read from
the workspace's conventional folders (``converted/<dataset>/<split>``, ``rois/...``), keyed by the
matched parameters. This is the only description of the pipeline graph.
"""
from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

PROFILES_FILE = Path(__file__).with_name("profiles.toml")
#: full = the original solution; tiny = toy size for the tests; demo = sized so that the models learn on
#: the synthetic cohort within minutes on 2 CPU cores (``make demo``).
PROFILES: tuple[str, ...] = ("full", "tiny", "demo")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ParameterError(ValueError):
    """A parameter override that does not fit the stage (unknown key or bad value)."""


@dataclass(frozen=True)
class Param:
    """One typed stage parameter. ``kind`` is int, float, str, bool, ints or floats (comma lists)."""

    name: str
    kind: str
    help: str
    choices: tuple[Any, ...] = ()

    def parse(self, text: Any) -> Any:
        """Convert a value (from a profile or a ``key=value`` string) to this parameter's type."""
        try:
            value = self._convert(text)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"{self.name}: {text!r} is not a valid {self.kind} ({exc})") from None
        if self.choices and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise ParameterError(f"{self.name}: {value!r} is not one of {allowed}")
        return value

    def _convert(self, text: Any) -> Any:
        if self.kind == "bool":
            if isinstance(text, bool):
                return text
            lowered = str(text).strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError("use true or false")
        if self.kind == "int":
            if isinstance(text, bool) or (isinstance(text, float) and not text.is_integer()):
                raise ValueError("not an integer")
            return int(text)
        if self.kind == "float":
            if isinstance(text, bool):
                raise ValueError("not a number")
            return float(text)
        if self.kind == "str":
            return str(text)
        if self.kind in ("ints", "floats"):
            item = int if self.kind == "ints" else float
            parts = text if isinstance(text, (list, tuple)) else [p for p in str(text).split(",") if p.strip()]
            return [item(p) for p in parts]
        raise ValueError(f"unknown parameter kind {self.kind}")


@dataclass(frozen=True)
class Input:
    """One upstream dependency of a stage."""

    #: The upstream stage.
    stage: str
    #: This stage's parameter that receives the upstream job's artefact path; '' = read by convention.
    #: The input is planned only while that parameter names the upstream stage (a path or a job id
    #: given instead is used as it is).
    param: str = ""
    #: Which artefact of the upstream job fills ``param``.
    artefact: str = ""
    #: Parameters the upstream job must share with this one (same names).
    match: tuple[str, ...] = ()
    #: Values the upstream job must have, e.g. ``(("split", "train"),)``.
    fixed: tuple[tuple[str, Any], ...] = ()
    #: Only when this stage's ``dataset`` is this name (``demo-data`` writes the dataset ``demo``).
    when_dataset: str = ""

    def active(self, values: dict[str, Any]) -> bool:
        """Whether this stage, with these parameter values, needs the upstream job."""
        if self.when_dataset and values.get("dataset") != self.when_dataset:
            return False
        return not self.param or self.stage in split_refs(values.get(self.param, ""))


def split_refs(value: Any) -> list[str]:
    """The parts of a parameter filled by inputs: comma-separated stage names, job ids or paths."""
    return [part.strip() for part in str(value).split(",") if part.strip()]


@dataclass(frozen=True)
class Stage:
    """One pipeline step."""

    name: str
    help: str
    function: str
    params: tuple[Param, ...]
    #: GPU-heavy stages wait for a free GPU slot; CPU-only stages start at once.
    gpu: bool = False
    #: Whether ``resume`` makes sense (training stages continue from their checkpoint).
    resumable: bool = False
    #: What the stage consumes (see :class:`Input`).
    inputs: tuple[Input, ...] = ()
    #: Whether its ``shards`` parameter splits it into shard jobs (``ctx.shard``) and a final step.
    shardable: bool = False

    def input_params(self) -> set[str]:
        """Parameters filled with an upstream job's artefact path."""
        return {i.param for i in self.inputs if i.param}

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ParameterError(f"stage {self.name} has no parameter {name!r}; valid keys: {self.keys()}")

    def keys(self) -> str:
        return ", ".join(p.name for p in self.params)

    def load(self) -> Callable[[dict[str, Any], Any], None]:
        module, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(module), attr)

    def defaults(self, profile: str = "tiny") -> dict[str, Any]:
        """The parameter values of a profile, typed."""
        if profile not in PROFILES:
            raise ParameterError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
        table = _profiles().get(self.name, {})
        merged = {k: v for k, v in table.items() if not isinstance(v, dict)}
        merged.update(table.get(profile, {}))
        missing = [p.name for p in self.params if p.name not in merged]
        if missing:
            raise ParameterError(f"profiles.toml gives no {profile} value for {self.name}: {', '.join(missing)}")
        return {p.name: p.parse(merged[p.name]) for p in self.params}

    def resolve(self, profile: str = "tiny", overrides: dict[str, Any] | list[str] | None = None) -> dict[str, Any]:
        """Profile defaults with overrides applied; overrides are ``{key: value}`` or ``["key=value"]``."""
        values = self.defaults(profile)
        for key, raw in _pairs(overrides):
            if not any(p.name == key for p in self.params):
                raise ParameterError(f"stage {self.name} has no parameter {key!r}; valid keys: {self.keys()}")
            try:
                values[key] = self.param(key).parse(raw)
            except ParameterError as exc:
                raise ParameterError(f"{exc} (stage {self.name}; valid keys: {self.keys()})") from None
        return values


def _pairs(overrides: dict[str, Any] | list[str] | None) -> list[tuple[str, Any]]:
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    pairs = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"override {item!r} is not key=value")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _profiles() -> dict[str, Any]:
    with PROFILES_FILE.open("rb") as handle:
        return tomllib.load(handle)


P = Param
_DATASET = P("dataset", "str", "Dataset name under <workspace>/datasets, or a path to a Kaggle-layout folder")
_SPLIT = P("split", "str", "Which part of the dataset: train (series/) or test (test/series/)", ("train", "test"))
_DEVICE = P("device", "str", "Torch device: auto (CUDA when present), cuda or cpu", ("auto", "cuda", "cpu"))
_GAP_FACTOR = P("max_gap_factor", "float", "Note a series whose largest slice gap exceeds this many times its "
                                          "median slice spacing (a hole that resampling filled)")

_TRAIN3D_INPUTS = (
    Input("roi", match=("dataset",), fixed=(("split", "train"),)),
    Input("train3d", "init_from", "checkpoint", match=("dataset", "dataset_id", "size", "features", "blocks")),
)
_DEMO = Input("demo-data", when_dataset="demo")

_TRAIN3D_PARAMS = (
    _DATASET,
    P("dataset_id", "int", "nnU-Net dataset number of the stage-2 3D dataset (shared by train3d and the fine-tunes)"),
    P("fold", "int", "Cross-validation fold (nnU-Net 5-fold split, seed 12345), or -1 for all cases"),
    P("size", "int", "Edge of the cubic network input in voxels (crops are resized to size^3)"),
    P("features", "ints", "Encoder features per stage"),
    P("blocks", "ints", "Residual blocks per encoder stage"),
    P("epochs", "int", "Training epochs"),
    P("iterations", "int", "Training iterations per epoch"),
    P("val_iterations", "int", "Validation iterations per epoch"),
    P("batch_size", "int", "Volumes per batch"),
    P("initial_lr", "float", "Initial learning rate (SGD, PolyLR)"),
    P("optimizer", "str", "sgd = nnU-Net's SGD (the original); adamw = AdamW, same PolyLR (learns in far fewer iterations)",
      ("sgd", "adamw")),
    P("cpu_precision", "str", "On a CPU: fp32, or bf16 = autocast convolutions to bfloat16 (network steps ~1.5x faster "
      "where the CPU has AMX / AVX512-BF16; CUDA always uses nnU-Net's float16 autocast)", ("fp32", "bf16")),
    P("augmentation", "str", "nnunet = nnU-Net's default 3D training transforms (the original); mirror = only its "
      "mirroring (the demo: learns in far fewer iterations)", ("nnunet", "mirror")),
    P("oversampling", "float", "Targeted oversampling: a case with positive locations weighs 1 + mean(this / n_k), "
      "n_k = positives of location k (300 for the 4,405 competition series; scale it with the cohort)"),
    P("init_from", "str", "Start from these weights: a checkpoint or results folder, or 'train3d' = that planned job's ('' = scratch)"),
    P("labels_dir", "str", "Folder of external 26-class label volumes (<uid>.nii.gz) to use instead of ours ('' = none)"),
    _DEVICE,
)

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "demo-data",
            "Write the synthetic demo cohort in the exact Kaggle layout",
            "engine.data.demo:run",
            (
                P("out", "str", "Output folder ('' = <workspace>/datasets/demo)"),
                P("n", "int", "Number of series"),
                P("seed", "int", "Random seed; the same parameters give identical files"),
                P("size", "int", "Voxels per side of each volume"),
                P("test_fraction", "float", "Fraction of series held out in test/ with test_truth.csv"),
                P("defects", "bool", "Add a few broken series, listed in defects.csv"),
                P("test_tags_only", "bool", "Held-out split keeps only the DICOM tags of the competition's test allow-list"),
                P("aneurysm_mm", "floats", "Range of aneurysm sac radii in mm (low,high)"),
                P("test_location_positives", "int", "Positives every location column gets at least in the held-out split"),
            ),
        ),
        Stage(
            "convert",
            "DICOM series -> LPS NIfTI volumes, localizer masks and vessel labels",
            "engine.data.convert:run",
            (
                _DATASET,
                _SPLIT,
                P("workers", "int", "Parallel worker processes (0 = number of cores)"),
                P("seed", "int", "Seed of the per-series localizer box size draw"),
                P("box_mm", "floats", "Range of the localizer box edge in mm (low,high); the spec's 2,5 fits real aneurysms"),
                _GAP_FACTOR,
                P("shards", "int", "Split the series over this many jobs (a Slurm array), then merge their tables"),
            ),
            inputs=(_DEMO,),
            shardable=True,
        ),
        Stage(
            "stage1-data",
            "Build the nnU-Net 2D vessel-box dataset from converted volumes with vessel masks",
            "engine.stage1.dataset:run",
            (
                _DATASET,
                P("dataset_id", "int", "nnU-Net dataset number of the 2D dataset"),
                P("spacing", "floats", "In-plane target spacing in mm (rows, columns)"),
                P("jitter", "int", "Extra jittered slices per axis and volume"),
                P("seed", "int", "Seed of the slice jitter"),
            ),
            inputs=(Input("convert", match=("dataset",), fixed=(("split", "train"),)),),
        ),
        Stage(
            "train2d",
            "Train the stage-1 2D nnU-Net (vessel box)",
            "engine.stage1.train:run",
            (
                P("dataset_id", "int", "nnU-Net dataset number of the 2D dataset"),
                P("fold", "int", "Cross-validation fold, or -1 for all"),
                P("epochs", "int", "Training epochs"),
                P("iterations", "int", "Training iterations per epoch"),
                P("val_iterations", "int", "Validation iterations per epoch"),
                P("batch_size", "int", "Slices per batch (0 = nnU-Net's plan)"),
                P("features", "ints", "Encoder features per stage ('' = nnU-Net's plan)"),
                P("initial_lr", "float", "Initial learning rate"),
                P("validate", "bool", "Run nnU-Net's full validation of the fold afterwards (metric val_dice)"),
                _DEVICE,
            ),
            gpu=True,
            resumable=True,
            inputs=(Input("stage1-data", match=("dataset_id",)),),
        ),
        Stage(
            "roi",
            "Stage-1 inference on nine slices -> one crop box per series, and the crops",
            "engine.stage1.roi:run",
            (
                _DATASET,
                _SPLIT,
                P("model", "str", "Stage-1 results folder, a train2d job id, or 'train2d' = that planned job's model"),
                P("margin", "int", "Voxels added on every side of the box"),
                _DEVICE,
            ),
            gpu=True,
            inputs=(Input("convert", match=("dataset", "split")), Input("train2d", "model", "model")),
        ),
        Stage("train3d", "Train the stage-2 multi-task 3D network from scratch", "engine.stage2.train:run",
              _TRAIN3D_PARAMS, gpu=True, resumable=True, inputs=_TRAIN3D_INPUTS),
        Stage("finetune1", "Fine-tune stage 2 (fold 0, 100 epochs in full) from train3d", "engine.stage2.train:run",
              _TRAIN3D_PARAMS, gpu=True, resumable=True, inputs=_TRAIN3D_INPUTS),
        Stage("finetune2", "Fine-tune stage 2 (fold 1, 250 epochs in full) from train3d", "engine.stage2.train:run",
              _TRAIN3D_PARAMS, gpu=True, resumable=True, inputs=_TRAIN3D_INPUTS),
        Stage(
            "predict",
            "Two-stage inference with flip TTA -> predictions.csv and per-case review artefacts",
            "engine.inference:run",
            (
                _DATASET,
                _SPLIT,
                P("models", "str", "Stage-2 models, comma separated: results folders, job ids, or finetune1 / finetune2 = those planned jobs' models"),
                P("stage1_model", "str", "Stage-1 results folder, a train2d job id, or 'train2d' = that planned job's model"),
                P("tta", "int", "Flip views per model", (1, 4, 8)),
                P("margin", "int", "Voxels added on every side of the stage-1 box: the roi value the models were trained with"),
                P("save_segmentations", "bool", "Save both decoders' maps for the review screen"),
                _GAP_FACTOR,
                _DEVICE,
            ),
            gpu=True,
            inputs=(_DEMO, Input("train2d", "stage1_model", "model"), Input("finetune1", "models", "model"),
                    Input("finetune2", "models", "model")),
        ),
        Stage(
            "evaluate",
            "Score predictions with the competition metric (weighted column-wise AUC)",
            "engine.metrics:run",
            (
                P("predictions", "str", "predictions.csv (SeriesInstanceUID + 14 label columns), or 'predict' = that planned job's"),
                P("truth", "str", "Truth CSV with the same columns (e.g. test_truth.csv), or 'predict' = the truth of that job's split"),
            ),
            inputs=(Input("predict", "predictions", "predictions"), Input("predict", "truth", "truth")),
        ),
    )
}


def get_stage(name: str) -> Stage:
    """The stage called ``name``; a clear error listing the stages otherwise."""
    try:
        return STAGES[name]
    except KeyError:
        raise ParameterError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}") from None
