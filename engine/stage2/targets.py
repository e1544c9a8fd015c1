"""Stage-2 training targets: the 26-class label volume, the two decoder targets derived from it,
the left/right swap, the classification targets and the oversampling case weights
(MODEL_SPEC sections 4 and 7).

Label volume (``uint8``, one per case, the grid of the network input):

* 0 background, 1..13 vessels (``engine.labels.VESSELS``), 14..26 aneurysm at location
  ``label - 14`` (competition column order, ``engine.labels.aneurysm_label``). Aneurysm voxels
  overwrite vessel voxels (MODEL_SPEC 4 leaves this open; the aneurysm is the finding that matters).
* 27 = ``UNKNOWN_VESSEL``: "not an aneurysm, but nobody said whether this is vessel or background".
  ``combine_labels`` writes it on every non-aneurysm voxel of a case that has no vessel mask. It is
  the highest label, so the dataset may declare it to nnU-Net as ``"ignore": 27``; it survives
  nnU-Net's spatial augmentation and nearest-neighbour deep-supervision downsampling like any label.

How cases without a vessel mask are kept from teaching "no vessel here" (MODEL_SPEC 4): the label
above becomes a special *target value* in each decoder target, and ``engine.stage2.losses`` honours it
per voxel, so no per-case flag has to travel beside the batch:

* decoder 1: ``UNKNOWN_VESSEL`` -> ``NOT_ANEURYSM`` (known: not class 14; unknown: which of 0..13).
  Cross-entropy uses the marginal likelihood ``-log(1 - p_aneurysm)``; Dice scores only the aneurysm
  channel for such a case (its vessel channels are left out); AWDC leaves those voxels out.
* decoder 2: ``UNKNOWN_VESSEL`` -> ``IGNORE`` (every class 0..13 is possible there, so nothing is
  known): such voxels are left out of every term, exactly like nnU-Net's ignore label.

The aneurysm boxes of such cases still supervise both decoders and the "no aneurysm" signal of the
unknown voxels still reaches decoder 1's aneurysm class.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from engine.labels import (
    ANEURYSM_PRESENT,
    LOCATION_TO_VESSEL,
    LOCATIONS,
    LR_SWAP,
    MODALITY_INDEX,
    N_VESSELS,
    VESSEL_TO_LOCATION,
    aneurysm_label,
)

N_LOCATIONS = len(LOCATIONS)
FIRST_ANEURYSM_LABEL = aneurysm_label(0)  # 14
LAST_ANEURYSM_LABEL = aneurysm_label(N_LOCATIONS - 1)  # 26
#: Label of the 26-class volume for "vessel or background, unknown; not an aneurysm".
UNKNOWN_VESSEL = LAST_ANEURYSM_LABEL + 1  # 27

#: Decoder-1 classes: 0 background, 1..13 vessels, 14 aneurysm (any location).
NUM_CLASSES_1 = N_VESSELS + 2
ANEURYSM_CLASS_1 = N_VESSELS + 1
#: Decoder-2 classes: 0 background, k = vessel k united with the aneurysm at that vessel's location.
NUM_CLASSES_2 = N_VESSELS + 1

#: Target value (decoder 1 only): "one of classes 0..13, not the aneurysm".
NOT_ANEURYSM = 254
#: Target value: no supervision at this voxel.
IGNORE = 255


def _decoder1_table() -> Tensor:
    table = torch.full((UNKNOWN_VESSEL + 1,), IGNORE, dtype=torch.long)
    table[: N_VESSELS + 1] = torch.arange(N_VESSELS + 1)
    table[FIRST_ANEURYSM_LABEL : LAST_ANEURYSM_LABEL + 1] = ANEURYSM_CLASS_1
    table[UNKNOWN_VESSEL] = NOT_ANEURYSM
    return table


def _decoder2_table() -> Tensor:
    table = torch.full((UNKNOWN_VESSEL + 1,), IGNORE, dtype=torch.long)
    table[: N_VESSELS + 1] = torch.arange(N_VESSELS + 1)
    for location, vessel in LOCATION_TO_VESSEL.items():
        table[aneurysm_label(location)] = vessel
    return table


_TABLE_1 = _decoder1_table()
_TABLE_2 = _decoder2_table()


def _lookup(table: Tensor, labels: Tensor) -> Tensor:
    index = labels.long()
    if index.numel() and (int(index.min()) < 0 or int(index.max()) > UNKNOWN_VESSEL):
        raise ValueError(
            f"label volume holds values outside 0..{UNKNOWN_VESSEL} "
            f"(min {int(index.min())}, max {int(index.max())}); expected the 26-class stage-2 labels"
        )
    return table.to(index.device)[index]


def decoder1_target(labels: Tensor) -> Tensor:
    """26-class labels (any integer or float dtype, any shape) -> decoder-1 target (long):
    vessels kept, every aneurysm label -> 14, ``UNKNOWN_VESSEL`` -> ``NOT_ANEURYSM``."""
    return _lookup(_TABLE_1, labels)


def decoder2_target(labels: Tensor) -> Tensor:
    """26-class labels -> decoder-2 target (long): vessel k stays k, the aneurysm at a location
    joins that location's vessel class, ``UNKNOWN_VESSEL`` -> ``IGNORE``."""
    return _lookup(_TABLE_2, labels)


def aneurysm_mask(labels: Tensor) -> Tensor:
    """Boolean mask of the aneurysm voxels (labels 14..26) of a 26-class volume."""
    return (labels >= FIRST_ANEURYSM_LABEL) & (labels <= LAST_ANEURYSM_LABEL)


def combine_labels(vessels: np.ndarray | None, aneurysms: np.ndarray) -> np.ndarray:
    """The 26-class volume of one case from its vessel mask (0..13, or ``None`` when the case has
    none) and its aneurysm box mask (0 or 14..26). Aneurysm voxels overwrite vessel voxels; without
    a vessel mask every non-aneurysm voxel becomes ``UNKNOWN_VESSEL``."""
    aneurysms = np.asarray(aneurysms)
    bad = (aneurysms != 0) & ((aneurysms < FIRST_ANEURYSM_LABEL) | (aneurysms > LAST_ANEURYSM_LABEL))
    if bad.any():
        raise ValueError(f"aneurysm mask holds values outside 0 and {FIRST_ANEURYSM_LABEL}..{LAST_ANEURYSM_LABEL}: "
                         f"{sorted(np.unique(aneurysms[bad]).tolist())}")
    if vessels is None:
        base = np.full(aneurysms.shape, UNKNOWN_VESSEL, dtype=np.uint8)
    else:
        vessels = np.asarray(vessels)
        if vessels.shape != aneurysms.shape:
            raise ValueError(f"vessel mask {vessels.shape} and aneurysm mask {aneurysms.shape} differ in shape")
        if vessels.size and (vessels.min() < 0 or vessels.max() > N_VESSELS):
            raise ValueError(f"vessel mask holds values outside 0..{N_VESSELS}: "
                             f"{sorted(np.unique(vessels[(vessels < 0) | (vessels > N_VESSELS)]).tolist())}")
        base = vessels.astype(np.uint8)
    return np.where(aneurysms != 0, aneurysms, base).astype(np.uint8)


# ---- left/right -------------------------------------------------------------------------------

def _vessel_lr_swap() -> tuple[int, ...]:
    """Vessel label v -> the vessel label of its mirror image (via the location swap)."""
    return tuple(LOCATION_TO_VESSEL[LR_SWAP[VESSEL_TO_LOCATION[v]]] for v in range(1, N_VESSELS + 1))


#: Channel permutations that undo a left-right flip of the input on the decoder outputs.
DECODER1_LR_SWAP: tuple[int, ...] = (0, *_vessel_lr_swap(), ANEURYSM_CLASS_1)
DECODER2_LR_SWAP: tuple[int, ...] = (0, *_vessel_lr_swap())
#: 26-class label -> its mirror label (vessels and aneurysm locations swap sides; 0 and 27 stay).
LABEL_LR_SWAP: tuple[int, ...] = (
    0, *_vessel_lr_swap(), *(aneurysm_label(LR_SWAP[k]) for k in range(N_LOCATIONS)), UNKNOWN_VESSEL,
)


def swap_locations(values: Tensor | np.ndarray, dim: int = -1) -> Tensor | np.ndarray:
    """Permute the 13 location entries (logits, probabilities or targets) of a left-right
    flipped view, along ``dim``; AComm, Basilar Tip and Other Posterior stay."""
    if values.shape[dim] != N_LOCATIONS:
        raise ValueError(f"dimension {dim} has {values.shape[dim]} entries, expected the {N_LOCATIONS} locations")
    if isinstance(values, Tensor):
        return values.index_select(dim, torch.tensor(LR_SWAP, device=values.device))
    return np.take(values, LR_SWAP, axis=dim)


# ---- classification targets and oversampling --------------------------------------------------

class ClassificationTargets(NamedTuple):
    """One case's targets for the three heads."""

    present: float
    locations: np.ndarray  # (13,) float32, competition column order
    modality: int


def classification_targets(row: Mapping[str, Any]) -> ClassificationTargets:
    """Targets from one ``train.csv`` row (MODEL_SPEC 4: from the CSV, not from the masks)."""
    modality = str(row["Modality"])
    if modality not in MODALITY_INDEX:
        raise ValueError(f"series {row.get('SeriesInstanceUID', '?')}: unknown Modality {modality!r}; "
                         f"expected one of {list(MODALITY_INDEX)}")
    locations = np.array([float(row[c]) for c in LOCATIONS], dtype=np.float32)
    return ClassificationTargets(float(row[ANEURYSM_PRESENT]), locations, MODALITY_INDEX[modality])


def case_sampling_weights(locations: np.ndarray, numerator: float = 300.0) -> np.ndarray:
    """Targeted oversampling (MODEL_SPEC 7): ``locations`` is (cases, 13) of 0/1 over the whole CSV.
    With n_k the positives of location k, a case weighs 1 + mean over its positive locations of
    ``numerator / n_k``, or 1 with no positive location. Draw cases with probability w / sum(w)."""
    positives = np.asarray(locations, dtype=np.float64) > 0.5
    if positives.ndim != 2 or positives.shape[1] != N_LOCATIONS:
        raise ValueError(f"expected a (cases, {N_LOCATIONS}) location matrix, got shape {positives.shape}")
    counts = positives.sum(axis=0)
    boost = np.divide(numerator, counts, out=np.zeros(N_LOCATIONS), where=counts > 0)
    n_pos = positives.sum(axis=1)
    mean_boost = np.divide((positives * boost).sum(axis=1), n_pos, out=np.zeros(len(positives)), where=n_pos > 0)
    return 1.0 + mean_boost
