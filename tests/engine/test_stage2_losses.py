"""Stage-2 losses against hand computation on tiny tensors, against nnU-Net's own CE / Dice on
fully labelled data, and the partial-label semantics for cases without a vessel mask."""
from __future__ import annotations

import math

import pytest
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import (
    DownsampleSegForDSTransform,
)
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1

from engine.stage2.losses import (
    CE_WEIGHTS_1,
    BranchLoss,
    StageTwoLoss,
    aneurysm_heat,
    awdc,
    deep_supervision_weights,
    soft_dice,
    weighted_cross_entropy,
)
from engine.stage2.network import ResEncoderUNetTwoSegWithCls, StageTwoOutput
from engine.stage2.targets import (
    IGNORE,
    NOT_ANEURYSM,
    UNKNOWN_VESSEL,
    combine_labels,
    decoder1_target,
    decoder2_target,
)

LN2, LN3 = math.log(2), math.log(3)
S = 1e-5  # nnU-Net's Dice smooth


def test_weighted_cross_entropy_by_hand():
    # Three voxels, classes (bg, vessel, aneurysm) with weights (1, 1, 5).
    logits = torch.tensor([[0.0, 0.0, 0.0], [LN2, 0.0, 0.0], [0.0, 0.0, LN2], [9.0, -9.0, 3.0]]).T[None]  # (1, 3, 4)
    weight = torch.tensor([1.0, 1.0, 5.0])
    target = torch.tensor([[2, 0, NOT_ANEURYSM, IGNORE]])
    # voxel 0: class 2, p = 1/3, weight 5; voxel 1: class 0, p = 2/4, weight 1;
    # voxel 2: "not the aneurysm", p_aneurysm = 2/4 -> -log(1 - 1/2), weight 1; voxel 3 ignored.
    expected = (5 * LN3 + LN2 + LN2) / 7
    assert weighted_cross_entropy(logits, target, weight, aneurysm_class=2).item() == pytest.approx(expected, rel=1e-6)
    # Fully labelled: identical to PyTorch's weighted CE (what nnU-Net's RobustCrossEntropyLoss computes).
    logits = torch.randn(2, 15, 4, 5, 6)
    target = torch.randint(0, 15, (2, 4, 5, 6))
    w = torch.tensor(CE_WEIGHTS_1, dtype=torch.float32)
    torch.testing.assert_close(weighted_cross_entropy(logits, target, w, 14),
                               torch.nn.CrossEntropyLoss(weight=w)(logits, target))


def test_soft_dice_by_hand_and_against_nnunet():
    # One sample, (bg, fg), four voxels: p_fg = [1, .5, 0, 0], truth fg = [1, 1, 0, 0].
    fg = torch.tensor([1.0, 0.5, 0.0, 0.0])
    probs = torch.stack([1 - fg, fg])[None]
    target = torch.tensor([[1, 1, 0, 0]])
    expected = -(2 * 1.5 + S) / (2 + 1.5 + S)
    assert soft_dice(probs, target, None).item() == pytest.approx(expected, rel=1e-6)
    # An ignored voxel is left out of every sum.
    target_ignored = torch.tensor([[1, IGNORE, 0, 0]])
    assert soft_dice(probs, target_ignored, None).item() == pytest.approx(-(2 * 1 + S) / (1 + 1 + S), rel=1e-6)

    # Fully labelled, 15 channels, per sample, background excluded: nnU-Net's loss exactly.
    logits = torch.randn(2, 15, 6, 5, 4)
    target = torch.randint(0, 15, (2, 6, 5, 4))
    nnunet = MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, batch_dice=False, do_bg=False,
                                         smooth=S, ddp=False)
    torch.testing.assert_close(soft_dice(torch.softmax(logits, 1), target, 14), nnunet(logits, target[:, None]))


def test_soft_dice_scores_only_the_aneurysm_channel_of_a_case_without_vessels():
    # Classes (bg, vessel, aneurysm). Sample 0 is fully labelled; sample 1 has no vessel mask.
    p = torch.tensor([
        [[0.2, 0.2, 0.6], [0.1, 0.8, 0.1]],   # sample 0, voxels 0 and 1 (bg, vessel, aneurysm)
        [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]],   # sample 1
    ]).permute(0, 2, 1)  # (2, 3, 2)
    target = torch.tensor([[2, 1], [NOT_ANEURYSM, 2]])
    d_s0_vessel = (2 * 0.8 + S) / (1 + (0.2 + 0.8) + S)
    d_s0_aneurysm = (2 * 0.6 + S) / (1 + (0.6 + 0.1) + S)
    d_s1_aneurysm = (2 * 0.8 + S) / (1 + (0.2 + 0.8) + S)  # voxel 0 is a known negative for the aneurysm
    expected = -(d_s0_vessel + d_s0_aneurysm + d_s1_aneurysm) / 3
    assert soft_dice(p, target, aneurysm_class=2).item() == pytest.approx(expected, rel=1e-6)


def test_aneurysm_heat_map_by_hand():
    # Spatial (1, 1, 4): |shape|^2 = 1 + 1 + 16 = 18; aneurysm at x = 1 -> c = (0, 0, 1).
    mask = torch.zeros(2, 1, 1, 4, dtype=torch.bool)
    mask[0, 0, 0, 1] = True
    heat = aneurysm_heat(mask)
    torch.testing.assert_close(heat[0, 0, 0], torch.tensor([17 / 18, 1.0, 17 / 18, 14 / 18]))
    assert heat[1].abs().sum() == 0  # no aneurysm -> no heat
    # Two voxels -> centroid between them.
    mask = torch.zeros(1, 3, 3, 3, dtype=torch.bool)
    mask[0, 0, 0, 0] = mask[0, 2, 2, 2] = True
    heat = aneurysm_heat(mask)
    assert heat[0, 1, 1, 1].item() == pytest.approx(1.0)
    assert heat[0, 0, 0, 0].item() == pytest.approx(1 - 3 / 27)


def test_awdc_by_hand():
    # Spatial (1, 1, 4), classes (bg, vessel, aneurysm); p_fg = sigmoid(max fg logit - bg logit).
    diffs = [0.0, LN3, -LN3, 0.0]  # p = [.5, .75, .25, .5]
    p = [0.5, 0.75, 0.25, 0.5]
    logits = torch.zeros(1, 3, 1, 1, 4)
    logits[0, 2, 0, 0] = torch.tensor(diffs)
    logits[0, 1, 0, 0] = torch.tensor(diffs) - 1.0  # the max over foreground picks channel 2
    target = torch.tensor([[[[0, 2, 1, 0]]]])
    heat_mask = target == 2
    w = [1 + 17 / 18, 2.0, 1 + 17 / 18, 1 + 14 / 18]
    g = [0, 1, 1, 0]
    num = 2 * sum(wi * pi * wi * gi for wi, pi, gi in zip(w, p, g)) + 1e-3
    den = sum(wi * pi for wi, pi in zip(w, p)) + sum(wi * gi for wi, gi in zip(w, g)) + 1e-3
    assert awdc(logits, target, heat_mask).item() == pytest.approx(-num / den, rel=1e-6)
    # Without aneurysm heat (branch 2 by default) it is a plain binary Dice with smooth 1e-3.
    plain = (2 * (0.75 + 0.25) + 1e-3) / (sum(p) + 2 + 1e-3)
    assert awdc(logits, target, None).item() == pytest.approx(-plain, rel=1e-6)


def test_deep_supervision_weights_and_downsampled_targets():
    assert deep_supervision_weights(5) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0])
    assert deep_supervision_weights(1) == [1.0]
    torch.manual_seed(0)
    net = ResEncoderUNetTwoSegWithCls.from_params({"features": [4, 8, 16, 32], "blocks": [1, 1, 1, 1]})
    with torch.no_grad():
        out = net(torch.randn(2, 1, 16, 16, 16))
    labels = torch.randint(0, 28, (2, 1, 16, 16, 16)).to(torch.uint8)
    cls = {"present": torch.tensor([1.0, 0.0]), "locations": torch.zeros(2, 13), "modality": torch.tensor([0, 1])}
    loss = StageTwoLoss(len(out.seg1))
    from_full = loss(out, labels, **cls)
    # nnU-Net's own DS transform (per sample, as its data loader does) gives the same loss.
    ds = DownsampleSegForDSTransform([[1, 1, 1], [0.5] * 3, [0.25] * 3])
    per_case = [ds(segmentation=labels[b])["segmentation"] for b in range(2)]
    lists = [torch.stack([case[i] for case in per_case]) for i in range(3)]
    torch.testing.assert_close(loss(out, lists, **cls).total, from_full.total)
    # The lowest resolution has weight 0; the others weigh 2/3 and 1/3 (three outputs).
    changed = out._replace(seg1=[out.seg1[0], out.seg1[1], out.seg1[2] + 5.0])
    torch.testing.assert_close(loss(changed, labels, **cls).total, from_full.total)
    branch = BranchLoss(CE_WEIGHTS_1, 14)
    expected_seg1 = sum(w * branch(o, decoder1_target(t[:, 0]), decoder1_target(t[:, 0]) == 14)
                        for w, o, t in zip([2 / 3, 1 / 3], out.seg1, lists))
    torch.testing.assert_close(from_full.seg1, expected_seg1)


def test_total_loss_by_hand():
    # One case, spatial (1, 1, 2): voxel 0 background, voxel 1 vessel 5; all logits zero.
    labels = torch.tensor([[[[0, 5]]]], dtype=torch.uint8)
    out = StageTwoOutput([torch.zeros(1, 15, 1, 1, 2)], [torch.zeros(1, 14, 1, 1, 2)],
                         torch.zeros(1, 1), torch.zeros(1, 13), torch.zeros(1, 4))
    present, locations = torch.tensor([1.0]), torch.zeros(1, 13)
    locations[0, 0] = 1.0
    parts = StageTwoLoss(n_outputs=1)(out, labels, present, locations, torch.tensor([2]))

    def branch(c: int) -> float:
        ce = math.log(c)  # uniform softmax: every voxel has nll ln C whatever the weights
        hit = (2 * (1 / c) + S) / (1 + 2 / c + S)  # channel 5: one voxel, p = 1/C on both voxels
        miss = S / (2 / c + S)  # empty channels
        dice = (hit + (c - 2) * miss) / (c - 1)
        awdc_ = (2 * 0.5 + 1e-3) / (2 * 0.5 + 1 + 1e-3)  # p_fg = 1/2, no aneurysm -> w = 1
        return 2 * ce - dice - awdc_

    seg1, seg2 = branch(15), branch(14)
    bce_present = 1.25 * LN2
    bce_locations = (15 * LN2 + 12 * LN2) / 13
    ce_modality = math.log(4)
    assert parts.seg1.item() == pytest.approx(seg1, rel=1e-5)
    assert parts.seg2.item() == pytest.approx(seg2, rel=1e-5)
    assert parts.present.item() == pytest.approx(bce_present, rel=1e-6)
    assert parts.locations.item() == pytest.approx(bce_locations, rel=1e-6)
    assert parts.modality.item() == pytest.approx(ce_modality, rel=1e-6)
    total = (0.5 * (seg1 + seg2) + bce_present + bce_locations + ce_modality) / 3.5
    assert parts.total.item() == pytest.approx(total, rel=1e-5)


def test_a_case_without_vessel_mask_never_teaches_no_vessel():
    torch.manual_seed(1)
    boxes = torch.zeros(2, 6, 6, 6, dtype=torch.uint8)
    boxes[:, 2:4, 2:4, 2:4] = 19  # an aneurysm at the right MCA in both cases
    vessels = torch.randint(0, 14, (6, 6, 6), dtype=torch.uint8)
    labels = torch.stack([torch.from_numpy(combine_labels(vessels.numpy(), boxes[0].numpy())),
                          torch.from_numpy(combine_labels(None, boxes[1].numpy()))])[:, None]
    assert (labels[1] == UNKNOWN_VESSEL).sum() == 6**3 - 8
    logits1 = torch.randn(2, 15, 6, 6, 6)
    logits2 = torch.randn(2, 14, 6, 6, 6)
    cls = {"present": torch.ones(2), "locations": torch.zeros(2, 13), "modality": torch.zeros(2, dtype=torch.long)}
    loss = StageTwoLoss(n_outputs=1)

    def parts(l1: torch.Tensor, l2: torch.Tensor):
        return loss(StageTwoOutput([l1], [l2], torch.zeros(2, 1), torch.zeros(2, 13), torch.zeros(2, 4)), labels,
                    **cls)

    base = parts(logits1, logits2)
    # Shuffling background/vessel logits (channels 0..13) of the unlabelled case outside its box changes
    # nothing in either branch: no vessel/background decision is taught there ...
    unknown = (labels[1, 0] == UNKNOWN_VESSEL)
    shuffled1, shuffled2 = logits1.clone(), logits2.clone()
    perm = torch.randperm(14)
    shuffled1[1, :14] = torch.where(unknown, logits1[1, perm], logits1[1, :14])
    shuffled2[1] = torch.where(unknown, logits2[1, perm], logits2[1])
    moved = parts(shuffled1, shuffled2)
    assert moved.seg1.item() == pytest.approx(base.seg1.item(), rel=1e-6)
    assert moved.seg2.item() == pytest.approx(base.seg2.item(), rel=1e-6)
    # ... but "no aneurysm here" still is: raising the aneurysm logit there raises branch 1's loss.
    raised = logits1.clone()
    raised[1, 14] = torch.where(unknown, logits1[1, 14] + 3.0, logits1[1, 14])
    assert parts(raised, logits2).seg1 > base.seg1
    # The same shuffle on the labelled case does change the loss.
    shuffled1 = logits1.clone()
    shuffled1[0, :14] = logits1[0, perm]
    assert parts(shuffled1, logits2).seg1.item() != pytest.approx(base.seg1.item(), rel=1e-6)


def test_loss_under_autocast_and_backward():
    torch.manual_seed(0)
    net = ResEncoderUNetTwoSegWithCls.from_params({"features": [4, 8, 16, 32], "blocks": [1, 1, 1, 1]})
    labels = torch.randint(0, 27, (1, 1, 16, 16, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(1, 1, 16, 16, 16))
        parts = StageTwoLoss(len(out.seg1))(out, labels, torch.ones(1), torch.zeros(1, 13), torch.tensor([3]))
    assert parts.total.dtype == torch.float32 and torch.isfinite(parts.total)
    parts.total.backward()
    assert net.conv_encoder_blocks[0].blocks[0].conv1.conv.weight.grad is not None


# ---- the constants of MODEL_SPEC section 6, pinned through the default loss -----------------------
# Typed from the spec, not imported: a changed constant in engine/stage2/losses.py must fail here.
SPEC_CE_WEIGHTS_1 = [1, 1, 1, 5, 5, 1, 1, 1, 1, 1, 1, 1, 1, 10, 10]
SPEC_CE_WEIGHTS_2 = [1, 1, 1, 5, 5, 1, 1, 1, 1, 1, 1, 1, 1, 5]
SPEC_LOCATION_POS_WEIGHTS = [15, 15, 8, 8, 8, 8, 8, 15, 15, 8, 8, 8, 8]
SPEC_PRESENT_POS_WEIGHT = 1.25


def _every_label_once() -> torch.Tensor:
    """(1, 1, 2, 3, 9) labels holding each of 0..26 once, shuffled: every class of both decoders is a target."""
    order = torch.randperm(54, generator=torch.Generator().manual_seed(5)) % 27
    return order.view(1, 1, 2, 3, 9).to(torch.uint8)


def _heads(n: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, generator=g) * 2, torch.randn(n, 13, generator=g) * 2, torch.randn(n, 4, generator=g)


def _ce_by_hand(logits: torch.Tensor, target: torch.Tensor, weights: list[float]) -> float:
    """sum_v w[t_v] * (-log softmax(logits_v)[t_v]) / sum_v w[t_v], one voxel at a time."""
    log_p = torch.log_softmax(logits.double(), 1)[0].flatten(1)  # (C, V)
    t = target[0].flatten()
    num = sum(weights[int(c)] * -float(log_p[int(c), v]) for v, c in enumerate(t))
    return num / sum(weights[int(c)] for c in t)


def test_ce_class_weights_of_both_branches_are_the_spec_values() -> None:
    """Random logits make every class's nll different, so each of the 29 weights moves the loss
    (with uniform logits, as in ``test_total_loss_by_hand``, any weights would pass)."""
    torch.manual_seed(3)
    labels = _every_label_once()
    logits1, logits2 = torch.randn(1, 15, 2, 3, 9) * 2, torch.randn(1, 14, 2, 3, 9) * 2
    present, locations, modality = _heads()
    out = StageTwoOutput([logits1], [logits2], present, locations, modality)
    parts = StageTwoLoss(n_outputs=1)(out, labels, torch.ones(1), torch.ones(1, 13), torch.tensor([1]))
    t1, t2 = decoder1_target(labels[:, 0].long()), decoder2_target(labels[:, 0].long())
    assert set(t1.unique().tolist()) == set(range(15)) and set(t2.unique().tolist()) == set(range(14))
    for seg, logits, target, weights, heat in ((parts.seg1, logits1, t1, SPEC_CE_WEIGHTS_1, t1 == 14),
                                               (parts.seg2, logits2, t2, SPEC_CE_WEIGHTS_2, None)):
        unweighted = soft_dice(torch.softmax(logits, 1), target, 14 if heat is not None else None) + \
            awdc(logits, target, heat)
        expected = 2 * _ce_by_hand(logits, target, weights) + float(unweighted)
        assert seg.item() == pytest.approx(expected, rel=1e-5)
        flat = 2 * _ce_by_hand(logits, target, [1.0] * len(weights)) + float(unweighted)
        assert abs(expected - flat) > 1e-3  # the weights matter for these logits


def test_classification_pos_weights_are_the_spec_values() -> None:
    """All 13 locations positive with different logits: the loss is mean(pw_i * softplus(-x_i)), so
    each pos_weight counts; Aneurysm Present uses 1.25."""
    present, locations, modality = _heads(n=2, seed=4)
    out = StageTwoOutput([torch.zeros(2, 15, 1, 1, 2)], [torch.zeros(2, 14, 1, 1, 2)], present, locations, modality)
    labels = torch.zeros(2, 1, 1, 1, 2, dtype=torch.uint8)
    parts = StageTwoLoss(n_outputs=1)(out, labels, torch.ones(2), torch.ones(2, 13), torch.tensor([0, 3]))
    softplus = torch.nn.functional.softplus
    expected_locations = sum(SPEC_LOCATION_POS_WEIGHTS[i] * float(softplus(-locations[b, i]))
                             for b in range(2) for i in range(13)) / 26
    assert parts.locations.item() == pytest.approx(expected_locations, rel=1e-6)
    expected_present = SPEC_PRESENT_POS_WEIGHT * float(softplus(-present).mean())
    assert parts.present.item() == pytest.approx(expected_present, rel=1e-6)
    # negatives carry no pos_weight: plain softplus(x)
    negative = StageTwoLoss(n_outputs=1)(out, labels, torch.zeros(2), torch.zeros(2, 13), torch.tensor([0, 3]))
    assert negative.locations.item() == pytest.approx(float(softplus(locations).mean()), rel=1e-6)


def test_branch2_awdc_is_a_plain_dice_by_default_as_in_the_original() -> None:
    """MODEL_SPEC 6: branch 2's merged targets never carry an aneurysm label in the original, so its
    AWDC has no heat (the default ``branch2_aneurysm_heat=False``); True centres it on the aneurysm."""
    torch.manual_seed(6)
    labels = torch.zeros(1, 1, 6, 6, 6, dtype=torch.uint8)
    labels[0, 0, 1:5, 2:4, 0:6] = 3  # a vessel
    labels[0, 0, 4:6, 4:6, 4:6] = 16  # an aneurysm at location 2, off the vessel's centre
    logits2 = torch.randn(1, 14, 6, 6, 6) * 2
    out = StageTwoOutput([torch.randn(1, 15, 6, 6, 6)], [logits2], *_heads())
    cls = (torch.ones(1), torch.zeros(1, 13), torch.tensor([0]))
    default = StageTwoLoss(n_outputs=1)(out, labels, *cls)
    heated = StageTwoLoss(n_outputs=1, branch2_aneurysm_heat=True)(out, labels, *cls)
    t2 = decoder2_target(labels[:, 0].long())
    branch = BranchLoss(SPEC_CE_WEIGHTS_2, None)
    assert default.seg2.item() == pytest.approx(branch(logits2, t2, None).item(), rel=1e-6)
    assert heated.seg2.item() == pytest.approx(branch(logits2, t2, labels[:, 0] == 16).item(), rel=1e-6)
    assert abs(heated.seg2.item() - default.seg2.item()) > 1e-3
    assert heated.seg1.item() == pytest.approx(default.seg1.item(), rel=1e-6)  # branch 1 always has its heat
