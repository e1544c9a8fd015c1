"""Two-stage inference of one series (MODEL_SPEC 8): :class:`Predictor`.

Per series: read (DICOM with the conversion fallbacks, or NIfTI; ``engine.inference.series``) -> per
time point: stage-1 box (``engine.stage1.roi.VesselBoxModel``, nine slices) -> crop -> z-score over the
crop and trilinear resize to the model's ``size``^3 with ``align_corners=True``
(the operations of ``engine.stage2.dataset.prepare_image``, the function training used, run on the
inference device: :func:`prepare_tensor`) -> flip TTA -> mean of logits
over the views, then over the models -> sigmoid -> 14 probabilities (the 13 locations in competition
order, then Aneurysm Present). Several time points: element-wise max of the probabilities.

TTA views (flips of the (z, y, x) input; x = array axis 2 = the patient's left-right):
``tta=8`` every combination of z, y and x flips (the original); ``tta=4`` the combinations of y and x;
``tta=1`` none. On a view flipped along x the 13 location logits are permuted with
``engine.stage2.targets.swap_locations`` (a left structure appears on the right); Aneurysm Present is
unchanged. Every view set is closed under the x flip, so the prediction of a mirrored volume is the
mirrored prediction (tested). With segmentations requested, the decoder logits of each view are flipped
back and their channels swapped the same way (``DECODER1_LR_SWAP`` / ``DECODER2_LR_SWAP``) before the
mean; otherwise only the classification forward (encoder + heads) runs.

A DICOM series whose largest slice gap exceeds ``gap_factor`` times its median spacing (a hole that the
conversion's resampling filled, ``engine.data.slice_gaps``) is predicted as usual and carries the note
in :attr:`SeriesPrediction.slice_gap`.

Failure policy (a submission must never crash on one series): a folder without DICOM images is
``empty``, anything that cannot be read or predicted is ``failed``; both give 0.5 everywhere, and the
:class:`SeriesPrediction` says why.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from engine.data.dicom_series import SeriesError
from engine.data.slice_gaps import DEFAULT_FACTOR
from engine.inference.series import EmptySeries, load, series_id
from engine.labels import LABEL_COLUMNS
from engine.nnunet_runtime import select_device
from engine.stage1.fusion import Box3D
from engine.stage1.roi import VesselBoxModel
from engine.stage2.model_files import load_network
from engine.stage2.targets import DECODER1_LR_SWAP, DECODER2_LR_SWAP, swap_locations

#: Spatial dimensions of a (batch, channel, z, y, x) tensor.
Z, Y, X = 2, 3, 4
VIEWS: dict[int, tuple[tuple[int, ...], ...]] = {
    1: ((),),
    4: tuple(tuple(d for d in combo if d) for combo in itertools.product((0, Y), (0, X))),
    8: tuple(tuple(d for d in combo if d) for combo in itertools.product((0, Z), (0, Y), (0, X))),
}
OK, EMPTY, FAILED = "ok", "empty", "failed"
N_OUTPUTS = len(LABEL_COLUMNS)


@dataclass
class Segmentations:
    """Arg-max maps of both decoders on the network grid (size^3, (z, y, x)), for the review screen."""

    seg1: np.ndarray  # uint8: 0 background, 1..13 vessels, 14 aneurysm
    seg2: np.ndarray  # uint8: 0 background, k = vessel k or the aneurysm at its location
    image: np.ndarray  # float32 network input (z-scored crop resized to size^3)


@dataclass
class SeriesPrediction:
    """The 14 probabilities of one series and what a reviewer or a log needs besides them."""

    uid: str
    source: str
    probabilities: np.ndarray
    status: str = OK
    reason: str = ""
    fallback: str = ""
    #: Note of a large slice gap bridged by resampling ('' when none).
    slice_gap: str = ""
    timepoints: int = 0
    boxes: list[Box3D] = field(default_factory=list)
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    affine: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: Time point whose box and maps are kept for review (the one with the highest Aneurysm Present).
    review_timepoint: int = 0
    segmentations: Segmentations | None = None
    #: The reviewed time point's (z, y, x) volume, kept only with ``Predictor(keep_volume=True)``
    #: (``engine.inference.review_extras`` saves it for the review screen).
    volume: np.ndarray | None = None

    @property
    def seconds(self) -> float:
        return self.timings.get("total", 0.0)

    def as_dict(self) -> dict[str, float]:
        """Label column -> probability, in submission order."""
        return {c: float(p) for c, p in zip(LABEL_COLUMNS, self.probabilities)}

    def frame(self) -> pd.DataFrame:
        """The Kaggle gateway's row: exactly the 14 label columns, in order."""
        return pd.DataFrame([self.as_dict()], columns=list(LABEL_COLUMNS))

    def row(self) -> dict[str, Any]:
        """A ``predictions.csv`` row, exactly the submission format: SeriesInstanceUID and the 14 columns
        (seconds, errors and notes go to the per-case table)."""
        return {"SeriesInstanceUID": self.uid, **self.as_dict()}


def prepare_tensor(crop: torch.Tensor, size: int) -> torch.Tensor:
    """``engine.stage2.dataset.prepare_image`` (z-score over the crop, trilinear resize to ``size``^3 with
    ``align_corners=True``) on a tensor wherever it lives, so that a GPU does the resize; the same
    operations in the same order, hence the same numbers on the CPU (tested)."""
    data = crop.float()
    data = (data - data.mean()) / data.std(unbiased=False).clamp_min(1e-8)
    return F.interpolate(data[None, None], size=(size,) * 3, mode="trilinear", align_corners=True)


def neutral() -> np.ndarray:
    return np.full(N_OUTPUTS, 0.5, dtype=np.float64)


#: Input voxels one CPU forward pass may hold (eight views of 64^3).
CPU_PASS_VOXELS = 8 * 64**3


def cpu_views_per_pass(size: int, views: int) -> int:
    """TTA views per CPU forward pass for a ``size``^3 model: small inputs are dominated by per-operation
    overhead, so batching the views pays (demo, 24^3, 8 views x 2 models with segmentations: 0.35 s per
    series instead of 1.2 s), while a 224^3 input (11 M voxels) still goes one view at a time."""
    return max(1, min(views, CPU_PASS_VOXELS // size**3))


@dataclass
class StageTwoModel:
    """One loaded stage-2 fold model."""

    path: Path
    network: torch.nn.Module
    size: int


class Predictor:
    """Loads the stage-1 model and the stage-2 fold models once; predicts series one by one.

    ``models``: stage-2 results folders or checkpoint files (``engine.stage2.model_files`` contract).
    ``view_batch``: TTA views per forward pass (default: 4 on CUDA, where 224^3 activations are large; on a
    CPU as many as :func:`cpu_views_per_pass` allows: one at 224^3, all eight for the demo's small inputs).
    ``amp``: mixed precision (default on for CUDA; never on CPU, where autocast is slow).
    ``gap_factor``: a slice gap above this many times the median spacing is noted (``slice_gap``).
    ``keep_volume``: keep the reviewed time point's volume in the result (review files).
    """

    def __init__(self, stage1_model: Path | str, models: Sequence[Path | str], tta: int = 8,
                 device: str | torch.device = "auto", margin: int = 0, segmentations: bool = False,
                 view_batch: int | None = None, amp: bool | None = None, gap_factor: float = DEFAULT_FACTOR,
                 keep_volume: bool = False) -> None:
        if tta not in VIEWS:
            raise ValueError(f"tta={tta}: use one of {', '.join(map(str, VIEWS))} views")
        if not models:
            raise ValueError("no stage-2 model given")
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.tta = tta
        self.views = VIEWS[tta]
        self.margin = margin
        self.segmentations = segmentations
        self.gap_factor = gap_factor
        self.keep_volume = keep_volume
        cuda = self.device.type == "cuda"
        self.view_batch = view_batch or (4 if cuda else None)
        self.amp = cuda if amp is None else (amp and cuda)
        self.stage1_path = Path(stage1_model)
        if cuda:
            torch.backends.cudnn.benchmark = True  # every stage-2 input has the same shape
        self.stage1 = VesselBoxModel.load(self.stage1_path, self.device)
        self.models = []
        for path in models:
            network, spec = load_network(path, self.device)
            self.models.append(StageTwoModel(Path(path), network, int(spec["size"])))

    def describe(self) -> str:
        names = ", ".join(f"{m.path} ({m.size}^3)" for m in self.models)
        return (f"stage 1 {self.stage1_path}; stage 2 {len(self.models)} model(s): {names}; {self.tta} view(s); "
                f"{self.device}{', mixed precision' if self.amp else ''}")

    # ---- one volume ---------------------------------------------------------------------------

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()

    def _views(self, model: StageTwoModel, image: torch.Tensor, segment: bool
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Mean over the views of the 14 logits (locations, then present) and, with ``segment``, of
        both decoders' logits (flipped back, left/right channels swapped on x-flipped views)."""
        logits = torch.zeros(N_OUTPUTS, dtype=torch.float32, device=self.device)
        seg_sum: list[torch.Tensor] | None = None
        per_pass = self.view_batch or cpu_views_per_pass(model.size, len(self.views))
        for start in range(0, len(self.views), per_pass):
            chunk = self.views[start:start + per_pass]
            batch = torch.cat([image.flip(flips) if flips else image for flips in chunk])
            with self._autocast():
                if segment:
                    out = model.network(batch)
                    present, locations, maps = out.cls_present, out.cls_locations, (out.seg1[0], out.seg2[0])
                else:
                    present, locations, _ = model.network.classify(batch)
                    maps = None
            for i, flips in enumerate(chunk):
                loc = locations[i].float()
                if X in flips:
                    loc = swap_locations(loc)
                logits[:-1] += loc
                logits[-1] += present[i, 0].float()
                if maps is not None:
                    back = [m[i:i + 1].float().flip(flips) if flips else m[i:i + 1].float() for m in maps]
                    if X in flips:
                        back = [b[:, list(swap)] for b, swap in zip(back, (DECODER1_LR_SWAP, DECODER2_LR_SWAP))]
                    seg_sum = back if seg_sum is None else [s + b for s, b in zip(seg_sum, back)]
        n = len(self.views)
        return logits / n, (None if seg_sum is None else (seg_sum[0] / n, seg_sum[1] / n))

    @torch.inference_mode()
    def predict_volume(self, volume: np.ndarray, spacing: np.ndarray, segment: bool | None = None
                       ) -> tuple[np.ndarray, Box3D, Segmentations | None, dict[str, float]]:
        """Probabilities (14), stage-1 box, optional maps and step timings of one (z, y, x) volume."""
        segment = self.segmentations if segment is None else segment
        timings: dict[str, float] = {}
        started = time.perf_counter()
        box, _ = self.stage1.box(volume, spacing, self.margin)
        timings["stage1"] = time.perf_counter() - started
        started = time.perf_counter()
        crop = torch.from_numpy(np.ascontiguousarray(volume[box.slices()])).to(self.device)
        inputs: dict[int, torch.Tensor] = {}
        logits = torch.zeros(N_OUTPUTS, dtype=torch.float32, device=self.device)
        seg_sum: tuple[torch.Tensor, torch.Tensor] | None = None
        for model in self.models:
            if model.size not in inputs:
                inputs[model.size] = prepare_tensor(crop, model.size)
            model_logits, maps = self._views(model, inputs[model.size], segment)
            logits += model_logits
            if maps is not None:
                if seg_sum is not None and seg_sum[0].shape != maps[0].shape:
                    raise ValueError("segmentations need stage-2 models of one size; predict without them")
                seg_sum = maps if seg_sum is None else (seg_sum[0] + maps[0], seg_sum[1] + maps[1])
        probabilities = torch.sigmoid(logits / len(self.models)).double().cpu().numpy()
        segmentations = None
        if seg_sum is not None:
            size = self.models[0].size
            segmentations = Segmentations(seg_sum[0][0].argmax(0).to(torch.uint8).cpu().numpy(),
                                          seg_sum[1][0].argmax(0).to(torch.uint8).cpu().numpy(),
                                          inputs[size][0, 0].float().cpu().numpy())
        timings["stage2"] = time.perf_counter() - started
        return probabilities, box, segmentations, timings

    # ---- one series ---------------------------------------------------------------------------

    def predict_series(self, path: Path | str, uid: str | None = None,
                       segmentations: bool | None = None) -> SeriesPrediction:
        """The prediction of a DICOM series folder or a NIfTI file; never raises for a bad series."""
        path = Path(path)
        started = time.perf_counter()
        result = SeriesPrediction(uid or series_id(path), str(path), neutral())
        step = "reading"
        try:
            series = load(path)
            result.timings["read"] = time.perf_counter() - started
            result.fallback, result.timepoints = series.fallback, len(series.volumes)
            result.slice_gap = series.gaps.note(self.gap_factor) if series.gaps is not None else ""
            result.spacing = tuple(float(s) for s in series.spacing)  # type: ignore[assignment]
            result.affine = series.affine
            step = "predicting"
            per_timepoint = []
            for t, volume in enumerate(series.volumes):
                probabilities, box, maps, timings = self.predict_volume(volume, series.spacing, segmentations)
                per_timepoint.append(probabilities)
                result.boxes.append(box)
                for key, value in timings.items():
                    result.timings[key] = result.timings.get(key, 0.0) + value
                if t == 0 or probabilities[-1] > per_timepoint[result.review_timepoint][-1]:
                    result.review_timepoint, result.segmentations = t, maps
                    result.shape = tuple(volume.shape)  # type: ignore[assignment]
                    result.volume = volume if self.keep_volume else None
            result.probabilities = np.max(per_timepoint, axis=0)
        except EmptySeries as exc:
            result.status, result.reason = EMPTY, str(exc)
            result.probabilities = neutral()
        except SeriesError as exc:
            result.status, result.reason = FAILED, f"cannot read the series: {exc}"
            result.probabilities = neutral()
        except Exception as exc:  # the contract: a bad series gets 0.5 and a reason, the batch goes on
            result.status, result.reason = FAILED, f"error while {step}: {type(exc).__name__}: {exc}"
            result.probabilities = neutral()
            result.segmentations = result.volume = None
        result.reason = " ".join(result.reason.split())
        result.timings["total"] = time.perf_counter() - started
        return result
