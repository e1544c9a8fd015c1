"""The stage-2 nnU-Net dataset: stage-1 crops resized to ``size``^3, 26-class labels, plans, preprocessing.

Built by the first stage-2 training job of a workspace and reused by the later ones while its inputs
stay the same (``stage2_manifest.json`` records them; any change rebuilds raw and preprocessed data).

Inputs
    ``ctx.workspace.rois(dataset, "train")`` (output of ``roi``): ``rois.csv``, ``images/<uid>_0000.nii.gz``,
    ``masks/<uid>.nii.gz`` (aneurysm boxes 14..26), ``vessels/<uid>.nii.gz`` (0..13, only for series with a
    segmentation), all cropped, converted layout (LPS; ``get_fdata().transpose(2, 1, 0)`` is (z, y, x)).
    ``train.csv`` of the dataset gives the classification (14 columns) and modality targets.
    Optional ``labels_dir``: external 26-class label volumes ``<uid>.nii.gz`` in the converted layout, on
    the grid of the crop or of the whole converted volume (then cut with the ``rois.csv`` box); they
    replace ours for the series they cover (e.g. the original team's released pseudo-labels).

Per case (:func:`prepare_image`, :func:`prepare_labels`)
    image: z-score over the whole crop (std at least 1e-8), then trilinear resize to ``size``^3 with
    ``align_corners=True``: exactly the input MODEL_SPEC 8 gives the network at inference, so training and
    inference see the same intensities (the original resized first and let nnU-Net z-score; nnU-Net's
    z-score of our already normalised volume is then a near identity). labels: nearest-neighbour resize of
    the 26-class volume of ``engine.stage2.targets.combine_labels`` (aneurysm over vessel).

Cases without a vessel segmentation (MODEL_SPEC 4: never teach "no vessel here")
    ``combine_labels(None, aneurysms)`` marks every non-aneurysm voxel ``UNKNOWN_VESSEL`` (27), declared to
    nnU-Net as its ``ignore`` label (the highest one, as nnU-Net requires). It survives augmentation and
    deep-supervision downsampling like any label; the stage-2 loss maps it to "not an aneurysm, vessel
    unknown" for decoder 1 (only the aneurysm class is supervised there) and to "ignore" for decoder 2. The
    aneurysm boxes of such cases still supervise both decoders. Voxels padded in by augmentation become 0
    (outside the image there is no vessel, so that is true).

nnU-Net layout
    ``nnUNet_raw/Dataset<id>_Stage2Cube``: ``imagesTr``, ``labelsTr``, ``dataset.json``, ``classification.csv``
    (case, 14 label columns, modality index) and the manifest. Plans: nnU-Net's ``ExperimentPlanner`` output,
    reduced to ``3d_fullres`` with patch = ``size``^3, spacing 1 mm, z-score, batch size and our network's
    constructor kwargs as ``arch_kwargs`` (see :func:`stage_plans`); preprocessing by nnU-Net's
    ``DefaultPreprocessor``. The split is nnU-Net's 5-fold split (seed 12345), or a ``splits_final.json``
    placed in the preprocessed folder by the user (kept while it names exactly the dataset's cases);
    see :func:`write_split`.
"""
from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from engine.context import StageContext
from engine.labels import LABEL_COLUMNS, LOCATIONS, VESSELS
from engine.nnunet_runtime import case_listing
from engine.stage1.slices import read_volume
from engine.stage2.network import ResEncoderUNetTwoSegWithCls
from engine.stage2.targets import UNKNOWN_VESSEL, case_sampling_weights, classification_targets, combine_labels

DATASET_SUFFIX = "Stage2Cube"
CONFIGURATION = "3d_fullres"
#: Plans the data is preprocessed with; per-stage plans (:func:`stage_plans`) share its data identifier.
BASE_PLANS = "Stage2Plans"
CLASSIFICATION_FILE = "classification.csv"
MANIFEST_FILE = "stage2_manifest.json"
MODALITY_COLUMN = "modality"
#: Bump when the written data would differ for the same inputs, so that existing datasets are rebuilt.
FORMAT_VERSION = 1


def dataset_name(dataset_id: int) -> str:
    return f"Dataset{dataset_id:03d}_{DATASET_SUFFIX}"


# ---- per-case preparation ---------------------------------------------------------------------------

def prepare_image(crop: np.ndarray, size: int) -> np.ndarray:
    """The network input of one crop: z-score over the whole crop, trilinear resize to ``size``^3
    (``align_corners=True``); float32 (z, y, x). Shared with inference (MODEL_SPEC 8)."""
    data = torch.as_tensor(np.asarray(crop, dtype=np.float32))
    data = (data - data.mean()) / data.std(unbiased=False).clamp_min(1e-8)
    resized = F.interpolate(data[None, None], size=(size,) * 3, mode="trilinear", align_corners=True)
    return resized[0, 0].numpy()


def prepare_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a label volume to ``size``^3 (uint8)."""
    data = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    resized = F.interpolate(data[None, None], size=(size,) * 3, mode="nearest")
    return resized[0, 0].numpy().astype(np.uint8)


def check_size(size: int, n_stages: int) -> None:
    """The input edge must survive ``n_stages - 1`` halvings (224 with 6 stages -> 7^3 bottleneck)."""
    factor = 2 ** (n_stages - 1)
    if size < factor or size % factor:
        raise ValueError(f"size={size} must be a multiple of {factor} for a network of {n_stages} stages")


def write_volume(path: Path, array: np.ndarray) -> None:
    """A (z, y, x) array as NIfTI with 1 mm spacing, read back as the same array by nnU-Net's SimpleITK reader."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    partial = path.with_name(path.name.replace(".nii.gz", ".partial.nii.gz"))
    sitk.WriteImage(image, str(partial), useCompression=True)
    partial.replace(path)


def _box(row: pd.Series) -> tuple[slice, slice, slice]:
    return tuple(slice(int(row[f"{a}0"]), int(row[f"{a}1"])) for a in "zyx")  # type: ignore[return-value]


def external_labels(path: Path, crop_shape: tuple[int, ...], box: tuple[slice, slice, slice]) -> np.ndarray:
    """An external 26-class volume on the crop's grid: used as is when it has the crop's shape, cut with
    the roi box when it has the whole converted volume's shape; anything else is an error."""
    labels, _ = read_volume(path, np.int16)
    if labels.shape != crop_shape:
        cut = labels[box]
        if cut.shape != crop_shape or any(s.stop > n for s, n in zip(box, labels.shape)):
            raise ValueError(f"{path}: shape {labels.shape} is neither the crop's {crop_shape} nor a volume "
                             f"holding the roi box {[(s.start, s.stop) for s in box]}")
        labels = cut
    if labels.min() < 0 or labels.max() > UNKNOWN_VESSEL:
        raise ValueError(f"{path}: labels outside 0..{UNKNOWN_VESSEL} ({int(labels.min())}..{int(labels.max())})")
    return labels.astype(np.uint8)


def case_labels(rois: Path, uid: str, row: pd.Series, crop_shape: tuple[int, ...], labels_dir: Path | None,
                aneurysm_present: bool) -> tuple[np.ndarray, str]:
    """The 26-class volume of one crop and where it came from (``external``, ``vessels``, ``no-vessels``)."""
    if labels_dir is not None and (labels_dir / f"{uid}.nii.gz").is_file():
        return external_labels(labels_dir / f"{uid}.nii.gz", crop_shape, _box(row)), "external"
    mask_file = rois / "masks" / f"{uid}.nii.gz"
    if mask_file.is_file():
        aneurysms, _ = read_volume(mask_file, np.uint8)
    elif not aneurysm_present:
        aneurysms = np.zeros(crop_shape, dtype=np.uint8)
    else:
        raise FileNotFoundError(f"series {uid}: train.csv says Aneurysm Present but {mask_file} is missing")
    if aneurysms.shape != crop_shape:
        raise ValueError(f"series {uid}: aneurysm mask {aneurysms.shape} differs from the crop {crop_shape}")
    vessel_file = rois / "vessels" / f"{uid}.nii.gz"
    vessels = read_volume(vessel_file, np.uint8)[0] if vessel_file.is_file() else None
    source = "vessels" if vessels is not None else "no-vessels"
    return combine_labels(vessels, aneurysms), source


# ---- dataset.json, manifest -------------------------------------------------------------------------

def dataset_json(dataset_id: int, cases: Sequence[str], description: str) -> dict[str, Any]:
    """nnU-Net's dataset.json: labels 0..26 of MODEL_SPEC 4 and ``UNKNOWN_VESSEL`` as the ignore label,
    and the case files (``engine.nnunet_runtime.case_listing``)."""
    labels = {"background": 0}
    labels.update({f"vessel: {name}": i + 1 for i, name in enumerate(VESSELS)})
    labels.update({f"aneurysm: {name}": 14 + i for i, name in enumerate(LOCATIONS)})
    labels["ignore"] = UNKNOWN_VESSEL
    return {"channel_names": {"0": "zscore"}, "labels": labels, "numTraining": len(cases), "file_ending": ".nii.gz",
            "name": dataset_name(dataset_id), "description": description, "dataset": case_listing(cases)}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _folder_digest(folder: Path | None) -> str:
    if folder is None or not folder.is_dir():
        return ""
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*.nii.gz"))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def manifest(params: dict[str, Any], rois: Path, csv: Path, labels_dir: Path | None) -> dict[str, Any]:
    """What the dataset was built from; a different manifest means a rebuild."""
    return {"format": FORMAT_VERSION, "size": int(params["size"]), "rois": str(rois),
            "rois_csv": _digest(rois / "rois.csv"), "train_csv": _digest(csv),
            "labels_dir": str(labels_dir or ""), "labels": _folder_digest(labels_dir)}


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One builder at a time (finetune1 and finetune2 may start together on two GPUs)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".stage2.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- plans ------------------------------------------------------------------------------------------

def network_kwargs(features: Sequence[int], blocks: Sequence[int]) -> dict[str, Any]:
    """Constructor kwargs of ``ResEncoderUNetTwoSegWithCls`` (besides ``in_channels``/``deep_supervision``),
    as stored in the plans' ``arch_kwargs`` and in ``network.json``. Strides per axis so that nnU-Net's
    deep-supervision scales (``pool_op_kernel_sizes``) come out right."""
    n = len(features)
    if len(blocks) != n:
        raise ValueError(f"features {list(features)} and blocks {list(blocks)} must have the same length")
    return {"features": [int(f) for f in features], "blocks": [int(b) for b in blocks],
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), "kernel_sizes": [[3, 3, 3]] * n}


def stage_plans(base: dict, plans_name: str, size: int, batch_size: int, features: Sequence[int],
                blocks: Sequence[int]) -> dict:
    """A copy of the base plans for one training: patch ``size``^3, 1 mm, batch size, our network."""
    plans = copy.deepcopy(base)
    plans["plans_name"] = plans_name
    config = plans["configurations"][CONFIGURATION]
    config["batch_size"] = int(batch_size)
    config["patch_size"] = [int(size)] * 3
    config["architecture"] = {
        "network_class_name": f"{ResEncoderUNetTwoSegWithCls.__module__}.{ResEncoderUNetTwoSegWithCls.__name__}",
        "arch_kwargs": network_kwargs(features, blocks),
        "_kw_requires_import": [],
    }
    return plans


def _base_plans(planned: dict, size: int) -> dict:
    """nnU-Net's plan reduced to the one configuration we train, with the fixed geometry of MODEL_SPEC 7."""
    plans = copy.deepcopy(planned)
    config = plans["configurations"][CONFIGURATION]
    plans["configurations"] = {CONFIGURATION: config}
    plans["plans_name"] = BASE_PLANS
    config["data_identifier"] = f"{BASE_PLANS}_{CONFIGURATION}"
    config["spacing"] = [1.0, 1.0, 1.0]
    config["median_image_size_in_voxels"] = [float(size)] * 3
    config["patch_size"] = [int(size)] * 3
    config["normalization_schemes"] = ["ZScoreNormalization"]
    config["use_mask_for_norm"] = [False]
    plans["transpose_forward"] = [0, 1, 2]
    plans["transpose_backward"] = [0, 1, 2]
    plans["original_median_spacing_after_transp"] = [1.0, 1.0, 1.0]
    plans["original_median_shape_after_transp"] = [int(size)] * 3
    return plans


@contextmanager
def _planner_threads() -> Iterator[None]:
    # the planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0 (= augment in-process)
    before = os.environ.get("nnUNet_n_proc_DA")
    os.environ["nnUNet_n_proc_DA"] = str(max(1, int(before or 1)))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("nnUNet_n_proc_DA")
        else:
            os.environ["nnUNet_n_proc_DA"] = before


# ---- building ---------------------------------------------------------------------------------------

def read_train_csv(csv: Path) -> pd.DataFrame:
    if not csv.is_file():
        raise FileNotFoundError(f"{csv} not found; stage 2 needs the dataset's train.csv for its targets")
    table = pd.read_csv(csv, dtype={"SeriesInstanceUID": str})
    missing = [c for c in ("SeriesInstanceUID", "Modality", *LABEL_COLUMNS) if c not in table.columns]
    if missing:
        raise ValueError(f"{csv} lacks the column(s): {', '.join(missing)}")
    return table.set_index("SeriesInstanceUID")


def write_case(raw: Path, rois: Path, uid: str, box: dict[str, Any], row: dict[str, Any], size: int,
               labels_dir: Path | None) -> dict[str, Any]:
    """Prepare and write one case's image and labels; returns its ``classification.csv`` row plus the
    label source. A module-level function so that a process pool can run it."""
    targets = classification_targets({"SeriesInstanceUID": uid, **row})
    crop, _ = read_volume(rois / "images" / f"{uid}_0000.nii.gz")
    labels, source = case_labels(rois, uid, pd.Series(box), crop.shape, labels_dir, targets.present > 0.5)
    write_volume(raw / "imagesTr" / f"{uid}_0000.nii.gz", prepare_image(crop, size))
    write_volume(raw / "labelsTr" / f"{uid}.nii.gz", prepare_labels(labels, size))
    return {"case": uid, **{c: float(row[c]) for c in LABEL_COLUMNS}, MODALITY_COLUMN: targets.modality,
            "source": source}


def write_raw(raw: Path, rois: Path, table: pd.DataFrame, size: int, labels_dir: Path | None,
              dataset_id: int, ctx: StageContext, workers: int = 1) -> list[str]:
    """Write imagesTr / labelsTr / dataset.json / classification.csv into ``raw``; returns the case ids.
    ``workers`` > 1 prepares cases in a process pool (224^3 volumes take about a second each)."""
    boxes = pd.read_csv(rois / "rois.csv", dtype={"SeriesInstanceUID": str}).set_index("SeriesInstanceUID")
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    jobs = []
    for uid in boxes.index:
        if uid not in table.index:
            ctx.reporter.log(f"series {uid}: in rois.csv but not in train.csv, skipped")
        elif not (rois / "images" / f"{uid}_0000.nii.gz").is_file():
            ctx.reporter.log(f"series {uid}: no crop {rois / 'images' / f'{uid}_0000.nii.gz'}, skipped")
        else:
            jobs.append((raw, rois, uid, boxes.loc[uid].to_dict(), table.loc[uid].to_dict(), size, labels_dir))
    if len(jobs) < 2:
        raise ValueError(f"only {len(jobs)} usable series in {rois} (with a row in train.csv); "
                         "stage 2 needs at least two to split into training and validation")
    rows = []
    if workers > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=torch.set_num_threads,
                                 initargs=(1,)) as pool:
            futures = [pool.submit(write_case, *job) for job in jobs]
            for index, future in enumerate(as_completed(futures)):
                rows.append(future.result())
                ctx.reporter.progress(index + 1, len(jobs), "stage-2 cases")
    else:
        for index, job in enumerate(jobs):
            rows.append(write_case(*job))
            ctx.reporter.progress(index + 1, len(jobs), "stage-2 cases")
    frame = pd.DataFrame(rows).sort_values("case")
    sources = frame.pop("source").value_counts().to_dict()
    frame.to_csv(raw / CLASSIFICATION_FILE, index=False)
    description = (f"Stage-2 crops of {rois} resized to {size}^3 (MODEL_SPEC 7); label sources: "
                   + ", ".join(f"{k} {sources.get(k, 0)}" for k in ("vessels", "no-vessels", "external")))
    (raw / "dataset.json").write_text(json.dumps(dataset_json(dataset_id, list(frame["case"]), description), indent=2))
    ctx.reporter.log(description)
    return list(frame["case"])


def plan_and_preprocess(dataset_id: int, size: int, ctx: StageContext) -> None:
    """Fingerprint, nnU-Net's planner (then our geometry, :func:`_base_plans`) and nnU-Net preprocessing.

    nnU-Net's dataset integrity check is skipped: :func:`write_raw` writes every case itself with checked
    shapes and label values, and the check would cost one more process pool per build."""
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.configuration import default_num_processes
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprint_dataset,
                                                                      plan_experiment_dataset, preprocess_dataset)

    folder = ctx.workspace.nnunet_preprocessed / dataset_name(dataset_id)
    shutil.rmtree(folder / f"{BASE_PLANS}_{CONFIGURATION}", ignore_errors=True)
    shutil.rmtree(folder / "gt_segmentations", ignore_errors=True)
    ctx.reporter.log("stage 2: extracting the dataset fingerprint")
    extract_fingerprint_dataset(dataset_id, num_processes=default_num_processes, check_dataset_integrity=False,
                                clean=True, verbose=False, show_progress_bar=False)
    with _planner_threads():
        _, identifier = plan_experiment_dataset(dataset_id)
    save_json(_base_plans(load_json(str(folder / f"{identifier}.json")), size), str(folder / f"{BASE_PLANS}.json"),
              sort_keys=False)
    ctx.reporter.log("stage 2: preprocessing")
    preprocess_dataset(dataset_id, BASE_PLANS, (CONFIGURATION,), (default_num_processes,), verbose=False,
                       show_progress_bar=False)


def write_split(folder: Path, cases: list[str], ctx: StageContext) -> None:
    """``splits_final.json``: kept when the user's file names exactly the dataset's cases, else nnU-Net's
    own split (``generate_crossval_split`` over the sorted cases, seed 12345, 5 folds or one per case
    below 5 cases), written here once under the lock so that concurrent trainings never race to create it."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    splits = folder / "splits_final.json"
    if splits.is_file():
        try:
            named = {c for fold in json.loads(splits.read_text()) for part in ("train", "val") for c in fold[part]}
        except (json.JSONDecodeError, KeyError, TypeError):
            named = set()
        if named == set(cases):
            ctx.reporter.log(f"stage 2: keeping the split of {splits}")
            return
        ctx.reporter.log(f"{splits} does not name exactly the dataset's cases; writing nnU-Net's 5-fold split")
    folds = generate_crossval_split(sorted(cases), seed=12345, n_splits=min(5, len(cases)))
    partial = splits.with_suffix(".partial")
    partial.write_text(json.dumps([{k: [str(c) for c in v] for k, v in f.items()} for f in folds], indent=2))
    partial.replace(splits)


def prepare_dataset(params: dict[str, Any], ctx: StageContext) -> Path:
    """Build (or reuse) the raw and preprocessed stage-2 dataset; returns the preprocessed folder."""
    dataset_id = int(params["dataset_id"])
    size = int(params["size"])
    check_size(size, len(params["features"]))
    rois = ctx.workspace.rois(params["dataset"], "train")
    if not (rois / "rois.csv").is_file():
        raise FileNotFoundError(f"{rois / 'rois.csv'} not found; run roi on the training split of "
                                f"{params['dataset']} first")
    csv = ctx.workspace.dataset(params["dataset"]) / "train.csv"
    labels_dir = Path(params["labels_dir"]).expanduser() if params.get("labels_dir") else None
    if labels_dir is not None and not labels_dir.is_dir():
        raise FileNotFoundError(f"labels_dir {labels_dir} is not a folder")
    raw = ctx.workspace.nnunet_raw / dataset_name(dataset_id)
    preprocessed = ctx.workspace.nnunet_preprocessed / dataset_name(dataset_id)
    wanted = manifest(params, rois, csv, labels_dir)
    with locked(ctx.workspace.nnunet_raw):
        taken = [p for p in ctx.workspace.nnunet_raw.glob(f"Dataset{dataset_id:03d}_*") if p.name != raw.name
                 and not p.name.endswith(".building")]
        if taken:
            raise FileExistsError(f"nnU-Net dataset id {dataset_id} is taken by {taken[0]}; choose another dataset_id")
        done = preprocessed / MANIFEST_FILE
        if done.is_file() and json.loads(done.read_text()) == wanted and (preprocessed / f"{BASE_PLANS}.json").is_file():
            ctx.reporter.log(f"stage 2: reusing {raw.name} (same crops, size, targets and labels)")
            return preprocessed
        ctx.reporter.log(f"stage 2: building {raw.name} from {rois} at {size}^3")
        table = read_train_csv(csv)
        building = raw.with_name(raw.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        workers = int(os.environ.get("nnUNet_def_n_proc", "1"))
        cases = write_raw(building, rois, table, size, labels_dir, dataset_id, ctx, workers)
        done.unlink(missing_ok=True)
        shutil.rmtree(raw, ignore_errors=True)
        building.rename(raw)
        preprocessed.mkdir(parents=True, exist_ok=True)
        write_split(preprocessed, cases, ctx)
        plan_and_preprocess(dataset_id, size, ctx)
        shutil.copyfile(raw / CLASSIFICATION_FILE, preprocessed / CLASSIFICATION_FILE)
        partial = done.with_suffix(".partial")
        partial.write_text(json.dumps(wanted, indent=2))
        partial.replace(done)
    return preprocessed


def read_classification(folder: Path) -> pd.DataFrame:
    """``classification.csv`` of a dataset folder, indexed by case id."""
    path = Path(folder) / CLASSIFICATION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; rebuild the stage-2 dataset (train3d without resume)")
    return pd.read_csv(path, dtype={"case": str}).set_index("case")



def sampling_probabilities(classification: pd.DataFrame, identifiers: Sequence[str],
                           numerator: float = 300.0) -> np.ndarray:
    """Targeted oversampling (MODEL_SPEC 7): case weights from the positives of the whole table
    (``classification.csv``, all folds, as the original counted over the whole CSV), normalised over
    the training cases ``identifiers`` (in that order, as nnU-Net's loader draws them). ``numerator``
    is the original's 300 for its 4,405 series; on a 150-series cohort 300 / n_k reaches 40 and
    batches become nearly all positive, which teaches "always an aneurysm"."""
    weights = pd.Series(case_sampling_weights(classification[list(LOCATIONS)].to_numpy(), numerator),
                        index=classification.index)
    missing = [i for i in identifiers if i not in weights.index]
    if missing:
        raise KeyError(f"cases without classification targets in {CLASSIFICATION_FILE}: {missing[:3]}")
    chosen = weights.loc[list(identifiers)].to_numpy()
    return chosen / chosen.sum()
