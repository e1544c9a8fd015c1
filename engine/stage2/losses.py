"""Stage-2 losses ("CE_DC_AWDC", MODEL_SPEC section 6).

Per segmentation branch and decoder resolution: ``2 * CE + 1 * Dice + 1 * AWDC``, combined over the
deep-supervision outputs with nnU-Net's weights (1/2^i, the lowest resolution 0, normalised:
[8/15, 4/15, 2/15, 1/15, 0] for five outputs) through nnU-Net's ``DeepSupervisionWrapper``; targets
are the 26-class volumes downsampled with nearest neighbour (as nnU-Net's data loader does) and
mapped to each branch (``engine.stage2.targets``). Classification: BCE-with-logits (pos_weight 1.25)
for Aneurysm Present, BCE-with-logits with per-location pos_weights for the 13 locations, plain CE
for the modality. Total = [0.5 * (seg_1 + seg_2) + bce_present + bce_locations + ce_modality] / 3.5.

Partial labels (cases without a vessel mask) follow the target values ``IGNORE`` and
``NOT_ANEURYSM`` described in ``engine.stage2.targets``. On fully labelled batches every term equals
its plain definition (CE = ``nn.CrossEntropyLoss(weight)``, Dice = nnU-Net's
``MemoryEfficientSoftDiceLoss(do_bg=False, batch_dice=False, smooth=1e-5)`` on the softmax); the
tests check both equalities.

AWDC of branch 2: in the original, branch 2's merged targets never carry an aneurysm label, so its
heat map is always zero and AWDC there is a plain binary Dice. That is the default here
(``branch2_aneurysm_heat=False``); ``True`` centres branch 2's heat on branch 1's aneurysm voxels.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from torch import Tensor, nn

from engine.stage2.network import StageTwoOutput
from engine.stage2.targets import (
    ANEURYSM_CLASS_1,
    IGNORE,
    NOT_ANEURYSM,
    NUM_CLASSES_1,
    NUM_CLASSES_2,
    aneurysm_mask,
    decoder1_target,
    decoder2_target,
)

#: Class weights of the cross-entropy, background first (MODEL_SPEC 6).
CE_WEIGHTS_1: tuple[float, ...] = (1, 1, 1, 5, 5, 1, 1, 1, 1, 1, 1, 1, 1, 10, 10)
CE_WEIGHTS_2: tuple[float, ...] = (1, 1, 1, 5, 5, 1, 1, 1, 1, 1, 1, 1, 1, 5)
PRESENT_POS_WEIGHT = 1.25
#: pos_weight of the 13 location logits, competition column order.
LOCATION_POS_WEIGHTS: tuple[float, ...] = (15, 15, 8, 8, 8, 8, 8, 15, 15, 8, 8, 8, 8)
DICE_SMOOTH = 1e-5
AWDC_SMOOTH = 1e-3


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """nnU-Net's weights: 1/2^i per output (highest resolution first), the last set to 0, then
    normalised to sum 1. One output -> [1.0]."""
    if n_outputs < 1:
        raise ValueError("need at least one output")
    if n_outputs == 1:
        return [1.0]
    raw = [1.0 / 2**i for i in range(n_outputs)]
    raw[-1] = 0.0
    total = sum(raw)
    return [w / total for w in raw]


def downsample_labels(labels: Tensor, shape: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of a (B, 1, *spatial) label volume, the mode nnU-Net's
    ``DownsampleSegForDSTransform`` uses ('nearest-exact')."""
    if tuple(labels.shape[2:]) == tuple(shape):
        return labels
    return F.interpolate(labels.float(), size=tuple(shape), mode="nearest-exact").to(labels.dtype)


def weighted_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor, aneurysm_class: int | None) -> Tensor:
    """Class-weighted CE averaged as PyTorch does (sum w_y * nll / sum w_y). ``IGNORE`` voxels are
    left out; ``NOT_ANEURYSM`` voxels (weight 1) contribute ``-log(1 - p_aneurysm)``, the likelihood
    of "any class but the aneurysm". Returns 0 when no voxel is supervised."""
    known = target < logits.shape[1]
    numerator = F.cross_entropy(logits, torch.where(known, target, -100), weight=weight, ignore_index=-100,
                                reduction="sum")
    denominator = (weight[torch.where(known, target, 0)] * known).sum()
    marginal = target == NOT_ANEURYSM
    if aneurysm_class is not None and bool(marginal.any()):
        log_p = F.log_softmax(logits, 1)
        others = [c for c in range(logits.shape[1]) if c != aneurysm_class]
        log_not_aneurysm = torch.logsumexp(log_p[:, others], 1)
        numerator = numerator - log_not_aneurysm[marginal].sum()
        denominator = denominator + marginal.sum()
    if float(denominator) == 0.0:
        return logits.sum() * 0.0
    return numerator / denominator


def soft_dice(probs: Tensor, target: Tensor, aneurysm_class: int | None, smooth: float = DICE_SMOOTH) -> Tensor:
    """Negative soft Dice, per sample and per foreground channel (background excluded), averaged
    over the (sample, channel) pairs that are defined - nnU-Net's ``MemoryEfficientSoftDiceLoss``
    formula. ``IGNORE`` voxels are masked out; a sample with ``NOT_ANEURYSM`` voxels only scores its
    aneurysm channel (those voxels are known negatives there); a sample with no supervised voxel
    is left out."""
    axes = tuple(range(2, probs.ndim))
    n_classes = probs.shape[1]
    with torch.no_grad():
        known = target < n_classes
        onehot = torch.zeros_like(probs, dtype=torch.float32)
        onehot.scatter_(1, torch.where(known, target, 0).unsqueeze(1), 1.0)
        onehot.mul_(known.unsqueeze(1))
        onehot = onehot[:, 1:]
        ignored = target == IGNORE
        mask = (~ignored).unsqueeze(1).float() if bool(ignored.any()) else None
        sum_gt = onehot.sum(axes)
        valid = torch.ones(sum_gt.shape, dtype=torch.bool, device=probs.device)
        if mask is not None:
            valid &= mask.flatten(1).sum(1, keepdim=True) > 0
        partial = (target == NOT_ANEURYSM).flatten(1).any(1)
        if aneurysm_class is not None and bool(partial.any()):
            vessel_channels = torch.ones(n_classes - 1, dtype=torch.bool, device=probs.device)
            vessel_channels[aneurysm_class - 1] = False
            valid &= ~(partial[:, None] & vessel_channels[None, :])
    fg = probs[:, 1:] if mask is None else probs[:, 1:] * mask
    intersect = (fg * onehot).sum(axes, dtype=torch.float32)
    sum_pred = fg.sum(axes, dtype=torch.float32)
    dice = (2 * intersect + smooth) / (sum_gt + sum_pred + smooth).clamp_min(1e-8)
    if not bool(valid.any()):
        return probs.sum() * 0.0
    return -dice[valid].mean()


def aneurysm_heat(mask: Tensor) -> Tensor:
    """Per-sample heat map around the centroid c of a (B, *spatial) aneurysm mask:
    h(v) = clamp(1 - (|v - c| / |spatial shape|)^2, 0), in voxel units with |.| the Euclidean norm;
    all zero for a sample without aneurysm voxels."""
    spatial = mask.shape[1:]
    weights = mask.float()
    count = weights.flatten(1).sum(1)  # (B,)
    dist_sq = torch.zeros_like(weights)
    for axis, n in enumerate(spatial):
        shape = [1] * (len(spatial) + 1)
        shape[axis + 1] = n
        coord = torch.arange(n, device=mask.device, dtype=torch.float32).view(shape)
        centre = (weights * coord).flatten(1).sum(1) / count.clamp_min(1)
        dist_sq += (coord - centre.view(-1, *([1] * len(spatial)))) ** 2
    diagonal_sq = float(sum(n * n for n in spatial))
    heat = (1 - dist_sq / diagonal_sq).clamp_min(0)
    return heat * (count > 0).view(-1, *([1] * len(spatial)))


def awdc(logits: Tensor, target: Tensor, heat_mask: Tensor | None, smooth: float = AWDC_SMOOTH) -> Tensor:
    """Aneurysm-weighted binary Dice (MODEL_SPEC 6), as a loss (-mean over samples).

    p = softmax over [background logit, max foreground logit] (= sigmoid of their difference),
    g = target > 0, w = 1 + heat (``aneurysm_heat`` of ``heat_mask``, zero when None),
    D = (2 * sum(w p * w g) + smooth) / (sum(w p) + sum(w g) + smooth). As specified, the numerator
    carries w twice and the denominator once. Voxels whose foreground status is unknown
    (``IGNORE``, ``NOT_ANEURYSM``) are left out; samples with none known are skipped."""
    axes = tuple(range(1, target.ndim))
    p = torch.sigmoid(logits[:, 1:].amax(1) - logits[:, 0])
    known = target < logits.shape[1]
    g = ((target > 0) & known).float()
    w = 1.0 + (aneurysm_heat(heat_mask) if heat_mask is not None else torch.zeros_like(p))
    w = w * known
    wp = w * p
    wg = w * g
    dice = (2 * (wp * wg).sum(axes) + smooth) / (wp.sum(axes) + wg.sum(axes) + smooth)
    has_known = known.flatten(1).any(1)
    if not bool(has_known.any()):
        return logits.sum() * 0.0
    return -dice[has_known].mean()


class BranchLoss(nn.Module):
    """One branch at one resolution: ``weight_ce * CE + weight_dice * Dice + weight_awdc * AWDC``."""

    def __init__(self, ce_weights: Sequence[float], aneurysm_class: int | None, weight_ce: float = 2.0,
                 weight_dice: float = 1.0, weight_awdc: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("ce_weights", torch.tensor(ce_weights, dtype=torch.float32), persistent=False)
        self.aneurysm_class = aneurysm_class
        self.weight_ce = weight_ce
        self.weight_dice = weight_dice
        self.weight_awdc = weight_awdc

    def forward(self, logits: Tensor, target: Tensor, heat_mask: Tensor | None = None) -> Tensor:
        """``logits`` (B, C, *spatial); ``target`` (B, *spatial) long with ``IGNORE`` /
        ``NOT_ANEURYSM`` values allowed; ``heat_mask`` (B, *spatial) bool or None."""
        if logits.shape[1] != len(self.ce_weights):
            raise ValueError(f"logits have {logits.shape[1]} channels, the CE weights {len(self.ce_weights)}")
        logits = logits.float()
        ce = weighted_cross_entropy(logits, target, self.ce_weights, self.aneurysm_class)
        dice = soft_dice(torch.softmax(logits, 1), target, self.aneurysm_class)
        return self.weight_ce * ce + self.weight_dice * dice + self.weight_awdc * awdc(logits, target, heat_mask)


class LossParts(NamedTuple):
    """The total (to back-propagate) and its parts (for logging)."""

    total: Tensor
    seg1: Tensor
    seg2: Tensor
    present: Tensor
    locations: Tensor
    modality: Tensor


class StageTwoLoss(nn.Module):
    """The full stage-2 loss. ``forward(output, labels, present, locations, modality)``:

    * ``output``: the network's ``StageTwoOutput`` (deep supervision on or off);
    * ``labels``: 26-class volumes, either nnU-Net's per-scale list (highest resolution first,
      each (B, 1, *spatial) or (B, *spatial)) or one full-resolution tensor that is downsampled here
      with nearest neighbour to every output's size;
    * ``present`` (B,) or (B, 1), ``locations`` (B, 13) as 0/1 floats; ``modality`` (B,) class indices.
    """

    def __init__(self, n_outputs: int, seg_weight: float = 0.5, present_pos_weight: float = PRESENT_POS_WEIGHT,
                 location_pos_weights: Sequence[float] = LOCATION_POS_WEIGHTS,
                 ce_weights_1: Sequence[float] = CE_WEIGHTS_1, ce_weights_2: Sequence[float] = CE_WEIGHTS_2,
                 branch2_aneurysm_heat: bool = False) -> None:
        super().__init__()
        if len(ce_weights_1) != NUM_CLASSES_1 or len(ce_weights_2) != NUM_CLASSES_2:
            raise ValueError(f"CE weights need {NUM_CLASSES_1} and {NUM_CLASSES_2} entries")
        self.ds_weights = deep_supervision_weights(n_outputs)
        self.seg_loss_1 = DeepSupervisionWrapper(BranchLoss(ce_weights_1, ANEURYSM_CLASS_1), self.ds_weights)
        self.seg_loss_2 = DeepSupervisionWrapper(BranchLoss(ce_weights_2, None), self.ds_weights)
        self.bce_present = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([present_pos_weight]))
        self.bce_locations = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(list(location_pos_weights),
                                                                          dtype=torch.float32))
        self.ce_modality = nn.CrossEntropyLoss()
        self.seg_weight = seg_weight
        self.branch2_aneurysm_heat = branch2_aneurysm_heat

    def _scales(self, labels: Tensor | Sequence[Tensor], outputs: Sequence[Tensor]) -> list[Tensor]:
        if isinstance(labels, Tensor):
            full = labels if labels.ndim == outputs[0].ndim else labels.unsqueeze(1)
            scales = [downsample_labels(full, o.shape[2:]) for o in outputs]
        else:
            scales = list(labels)
        if len(scales) != len(outputs):
            raise ValueError(f"{len(scales)} label scales for {len(outputs)} segmentation outputs")
        squeezed = [s[:, 0] if s.ndim == outputs[0].ndim else s for s in scales]
        for s, o in zip(squeezed, outputs):
            if tuple(s.shape[1:]) != tuple(o.shape[2:]):
                raise ValueError(f"labels {tuple(s.shape)} do not match output {tuple(o.shape)}")
        return squeezed

    def forward(self, output: StageTwoOutput, labels: Tensor | Sequence[Tensor], present: Tensor,
                locations: Tensor, modality: Tensor) -> LossParts:
        if len(output.seg1) != len(self.ds_weights):
            raise ValueError(f"the loss was built for {len(self.ds_weights)} outputs per branch, "
                             f"the network gave {len(output.seg1)} (deep supervision switched?)")
        scales = self._scales(labels, output.seg1)
        targets_1 = [decoder1_target(s) for s in scales]
        targets_2 = [decoder2_target(s) for s in scales]
        heat_1 = [aneurysm_mask(s) for s in scales]
        heat_2 = heat_1 if self.branch2_aneurysm_heat else [None] * len(scales)
        seg1 = self.seg_loss_1(list(output.seg1), targets_1, heat_1)
        seg2 = self.seg_loss_2(list(output.seg2), targets_2, heat_2)
        bce_present = self.bce_present(output.cls_present.float(), present.float().view_as(output.cls_present))
        bce_locations = self.bce_locations(output.cls_locations.float(), locations.float())
        ce_modality = self.ce_modality(output.modality.float(), modality.long())
        total = (self.seg_weight * (seg1 + seg2) + bce_present + bce_locations + ce_modality) / (self.seg_weight + 3)
        return LossParts(total, seg1, seg2, bce_present, bce_locations, ce_modality)
