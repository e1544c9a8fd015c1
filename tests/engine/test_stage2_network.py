"""The stage-2 network: the submitted configuration's exact size and names, output structure with
deep supervision on and off, the classification-only forward, autocast and checkpointing."""
from __future__ import annotations

import pytest
import torch

from engine.stage2.network import (
    OUT_CHANNELS_1,
    OUT_CHANNELS_2,
    ResEncoderUNet_two_seg_with_cls_modality,
    ResEncoderUNetTwoSegWithCls,
    StageTwoOutput,
)
from engine.stages import STAGES

TINY = {"features": [4, 8, 16, 32], "blocks": [1, 2, 1, 1]}
EDGE = 32


def tiny_net(**kwargs) -> ResEncoderUNetTwoSegWithCls:
    torch.manual_seed(0)
    return ResEncoderUNetTwoSegWithCls.from_params(TINY, **kwargs)


def test_full_configuration_has_the_submitted_size_and_names():
    # Built from the full profile of train3d, on CPU, counted only (no forward at 224^3).
    net = ResEncoderUNetTwoSegWithCls.from_params(STAGES["train3d"].defaults("full"))
    assert sum(p.numel() for p in net.parameters()) == 109_359_299
    state = net.state_dict()
    assert len(state) == 583
    # A few paths of the original checkpoint layout.
    for key in (
        "conv_encoder_blocks.0.blocks.0.skip.0.conv.weight",  # no stem: stage 0 is a 1 -> 32 block
        "conv_encoder_blocks.5.blocks.5.conv2.norm.weight",
        "transpconvs.0.weight",
        "decoder_blocks.0.convs.0.conv.weight",
        "transpconvs_last_two_1.3.bias",
        "decoder_blocks_last_two_2.3.convs.0.norm.bias",
        "seg_layers_1.4.weight",
        "seg_layers_2.0.bias",
        "cls_head_list.1.pooling.class_query",
        "cls_head_list.0.pooling.cross_attention.in_proj_weight",
        "cls_modality_head.pooling.classifier.weight",
    ):
        assert key in state, key
    assert state["conv_encoder_blocks.0.blocks.0.conv1.conv.weight"].shape == (32, 1, 3, 3, 3)
    assert state["cls_head_list.0.pooling.class_query"].shape == (2, 320)
    assert state["cls_head_list.1.pooling.classifier.weight"].shape == (13, 16 * 320)
    assert state["cls_modality_head.pooling.classifier.weight"].shape == (4, 4 * 320)
    assert state["seg_layers_1.4.weight"].shape == (15, 32, 1, 1, 1)
    assert state["seg_layers_2.0.weight"].shape == (14, 320, 1, 1, 1)
    assert ResEncoderUNet_two_seg_with_cls_modality is ResEncoderUNetTwoSegWithCls


def test_outputs_with_deep_supervision_on_and_off():
    net = tiny_net()
    x = torch.randn(2, 1, EDGE, EDGE, EDGE)
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, StageTwoOutput)
    # 4 encoder stages -> 3 decoder resolutions, highest first, per branch.
    assert [tuple(o.shape) for o in out.seg1] == [(2, OUT_CHANNELS_1, 32, 32, 32), (2, 15, 16, 16, 16), (2, 15, 8, 8, 8)]
    assert [tuple(o.shape) for o in out.seg2] == [(2, OUT_CHANNELS_2, 32, 32, 32), (2, 14, 16, 16, 16), (2, 14, 8, 8, 8)]
    assert out.cls_present.shape == (2, 1)
    assert out.cls_locations.shape == (2, 13)
    assert out.modality.shape == (2, 4)
    assert not torch.equal(out.seg1[0][:, :14], out.seg2[0])  # two separate branches

    net.deep_supervision = False
    with torch.no_grad():
        off = net(x)
    assert [tuple(o.shape) for o in off.seg1] == [(2, 15, 32, 32, 32)]
    assert [tuple(o.shape) for o in off.seg2] == [(2, 14, 32, 32, 32)]
    torch.testing.assert_close(off.seg1[0], out.seg1[0])
    torch.testing.assert_close(off.cls_locations, out.cls_locations)


def test_tiny_profile_builds_a_working_network():
    params = STAGES["train3d"].defaults("tiny")
    net = ResEncoderUNetTwoSegWithCls.from_params(params)
    size = params["size"]
    out = net(torch.randn(params["batch_size"], 1, size, size, size))  # training mode, as the trainer runs it
    assert len(out.seg1) == len(out.seg2) == len(params["features"]) - 1
    assert out.seg1[0].shape[2:] == (size, size, size)
    assert out.cls_locations.shape == (params["batch_size"], 13)


def test_other_sizes_are_parameters():
    net = ResEncoderUNetTwoSegWithCls(in_channels=2, features=[8, 16, 16], blocks=[1, 1, 1], strides=[1, 2, 2],
                                      kernel_sizes=[3, 3, 1], cls_query_nums=(3, 5), modality_queries=2,
                                      num_heads=2, shared_decoder_stages=0, deep_supervision=False)
    state = net.state_dict()
    assert state["conv_encoder_blocks.0.blocks.0.conv1.conv.weight"].shape == (8, 2, 3, 3, 3)
    assert state["conv_encoder_blocks.2.blocks.0.conv1.conv.weight"].shape == (16, 16, 1, 1, 1)
    assert state["cls_head_list.0.pooling.class_query"].shape == (3, 16)
    assert state["cls_modality_head.pooling.class_query"].shape == (2, 16)
    assert len(net.transpconvs) == 0 and len(net.transpconvs_last_two_1) == 2
    out = net(torch.randn(1, 2, 16, 16, 16))
    assert out.seg1[0].shape == (1, 15, 16, 16, 16)
    with pytest.raises(ValueError, match="same length"):
        ResEncoderUNetTwoSegWithCls.from_params({"features": [4, 8], "blocks": [1]})


def test_classification_only_forward_equals_the_full_forward_heads():
    net = tiny_net().eval()
    x = torch.randn(2, 1, EDGE, EDGE, EDGE)
    with torch.no_grad():
        full = net(x)
        fast = net.classify(x)
        with_mod = net.classify(x, with_modality=True)
    assert fast.modality is None
    torch.testing.assert_close(fast.cls_present, full.cls_present, rtol=0, atol=0)
    torch.testing.assert_close(fast.cls_locations, full.cls_locations, rtol=0, atol=0)
    torch.testing.assert_close(with_mod.modality, full.modality, rtol=0, atol=0)


def test_state_dict_round_trip_and_branch_independence():
    net = tiny_net()
    other = ResEncoderUNet_two_seg_with_cls_modality.from_params(TINY)
    other.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(1, 1, EDGE, EDGE, EDGE)
    out = net(x)
    # Only branch 2's loss: branch 1's own decoder stages get no gradient, the shared stage does.
    out.seg2[0].square().mean().backward()
    assert all(p.grad is None for p in net.decoder_blocks_last_two_1.parameters())
    assert all(p.grad is None for p in net.seg_layers_1.parameters())
    assert net.decoder_blocks[0].convs[0].conv.weight.grad is not None
    assert net.cls_head_list[0].pooling.class_query.grad is None


def test_autocast_and_activation_checkpointing():
    net = tiny_net()
    x = torch.randn(1, 1, 16, 16, 16)  # bottleneck 2^3: small, and CPU bfloat16 convolutions are slow
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.seg1[0].dtype == torch.bfloat16
    assert torch.isfinite(out.cls_locations.float()).all()

    def grads(model: ResEncoderUNetTwoSegWithCls) -> list[torch.Tensor]:
        model.zero_grad()
        o = model(x)
        sum(t.float().mean() for t in (*o.seg1, *o.seg2, o.cls_present, o.cls_locations, o.modality)).backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads(net)
    net.activation_checkpointing = True
    checkpointed = grads(net)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)
