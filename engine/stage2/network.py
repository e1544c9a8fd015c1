"""The stage-2 multi-task network: a residual U-Net with two segmentation decoders and three
cross-attention classification heads (MODEL_SPEC section 5).

Layout, for the full-size configuration (input 1 x 224^3):

* Encoder: six stages of ``StackedResidualBlocks`` of ``BasicBlockD`` (dynamic-network-architectures),
  features [32, 64, 128, 256, 320, 320], blocks [1, 3, 4, 6, 6, 6], strides [1, 2, 2, 2, 2, 2].
  There is **no stem**: stage 0 is a residual block 1 -> 32 whose skip is a 1x1x1 conv + norm. That is
  the difference from DNA's ``ResidualEncoderUNet`` and why that class is not reused whole.
* Decoder: the deepest stage (transposed conv 320 -> 320, concat skip, one conv block) is shared;
  the remaining four stages exist once per branch. Every decoder resolution has a 1x1x1 head per
  branch (15 channels for branch 1, 14 for branch 2), so deep supervision yields five maps per branch.
* Heads: three ``CrossAttentionPooling`` heads read the bottleneck feature map as tokens
  (7^3 = 343 tokens of 320 dims at 224^3, no positional encoding): Aneurysm Present (2 queries ->
  1 logit), the 13 locations (16 queries -> 13 logits) and the modality (4 queries -> 4 logits).

Module names follow the original ``ResEncoderUNet_two_seg_with_cls_modality`` so that the team's
released checkpoints load with ``load_state_dict`` (the full configuration has 109,359,299 parameters
and 583 state-dict tensors; ``tests/engine/test_stage2_network.py`` checks both). Weights other than
the queries and classifiers keep PyTorch's default initialisation, as in the original.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
from dynamic_network_architectures.building_blocks.helper import get_matching_convtransp
from dynamic_network_architectures.building_blocks.residual import (
    BasicBlockD,
    StackedResidualBlocks,
)
from dynamic_network_architectures.building_blocks.simple_conv_blocks import (
    StackedConvBlocks,
)
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from engine.labels import LOCATIONS, MODALITIES, N_VESSELS

#: Output channels of decoder 1 (background, 13 vessels, aneurysm) and decoder 2 (background, 13
#: vessel-or-aneurysm territories); see ``engine.stage2.targets``.
OUT_CHANNELS_1 = N_VESSELS + 2
OUT_CHANNELS_2 = N_VESSELS + 1

FULL_FEATURES: tuple[int, ...] = (32, 64, 128, 256, 320, 320)
FULL_BLOCKS: tuple[int, ...] = (1, 3, 4, 6, 6, 6)


class StageTwoOutput(NamedTuple):
    """What ``ResEncoderUNetTwoSegWithCls.forward`` returns.

    ``seg1`` / ``seg2``: logits of decoder 1 (B, 15, ...) and decoder 2 (B, 14, ...). With deep
    supervision on, one map per decoder resolution, **highest resolution first** (the order nnU-Net's
    ``DeepSupervisionWrapper`` and its downsampled targets use); with it off, a one-element list
    holding the full-resolution map. ``cls_present`` (B, 1), ``cls_locations`` (B, 13, competition
    column order) and ``modality`` (B, 4, ``engine.labels.MODALITIES`` order) are logits.

    A NamedTuple (not a dict or dataclass) so that DDP, ``torch.compile`` and tracing see a plain
    tuple of tensors and lists, and old-style unpacking still works.
    """

    seg1: list[Tensor]
    seg2: list[Tensor]
    cls_present: Tensor
    cls_locations: Tensor
    modality: Tensor


class ClassificationOutput(NamedTuple):
    """What ``ResEncoderUNetTwoSegWithCls.classify`` returns: the heads' logits only."""

    cls_present: Tensor
    cls_locations: Tensor
    modality: Tensor | None


class CrossAttentionPooling(nn.Module):
    """Learned queries attend over the feature-map tokens; the attended queries are normalised,
    concatenated and mapped linearly to the logits. No residual, no MLP, no positional encoding."""

    def __init__(self, embed_dim: int, query_num: int, num_classes: int, num_heads: int = 4) -> None:
        super().__init__()
        self.class_query = nn.Parameter(torch.empty(query_num, embed_dim))
        self.cross_attention = nn.MultiheadAttention(embed_dim, num_heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(embed_dim)
        self.classifier = nn.Linear(query_num * embed_dim, num_classes)
        nn.init.xavier_uniform_(self.class_query)
        nn.init.xavier_uniform_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Tensor) -> Tensor:
        """(B, C, *spatial) feature map -> (B, num_classes) logits."""
        tokens = features.flatten(2).transpose(1, 2)  # (B, N, C)
        queries = self.class_query.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        attended, _ = self.cross_attention(queries, tokens, tokens, need_weights=False)
        return self.classifier(self.norm(attended).flatten(1))


class ClassificationHead(nn.Module):
    """Wrapper kept only for the original's state-dict path ``<head>.pooling.<...>``."""

    def __init__(self, embed_dim: int, query_num: int, num_classes: int, num_heads: int = 4) -> None:
        super().__init__()
        self.pooling = CrossAttentionPooling(embed_dim, query_num, num_classes, num_heads)

    def forward(self, features: Tensor) -> Tensor:
        return self.pooling(features)


def _up_step(transpconv: nn.Module, block: nn.Module, x: Tensor, skip: Tensor) -> Tensor:
    """One decoder step: transposed conv, concatenate the encoder skip, conv block."""
    return block(torch.cat((transpconv(x), skip), 1))


def _per_stage(value: int | Sequence[Any], n: int, name: str) -> list[Any]:
    values = [value] * n if isinstance(value, int) else list(value)
    if len(values) != n:
        raise ValueError(f"{name} needs {n} entries, got {len(values)}: {values}")
    return values


class ResEncoderUNetTwoSegWithCls(nn.Module):
    """Residual-encoder U-Net with a shared deep decoder, two decoder branches and three
    cross-attention heads (see the module docstring). Every size is a constructor argument; the
    defaults are the submitted full-size configuration. ``from_params`` builds it from a stage's
    ``features`` / ``blocks`` parameters.

    ``deep_supervision`` is a plain attribute that may be switched after construction (nnU-Net's
    trainer sets ``network.decoder.deep_supervision`` for DNA networks; a trainer for this class sets
    ``network.deep_supervision``). ``activation_checkpointing`` recomputes each encoder and decoder
    stage in the backward pass (less memory, about one extra forward of compute); off by default.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels_1: int = OUT_CHANNELS_1,
        out_channels_2: int = OUT_CHANNELS_2,
        features: Sequence[int] = FULL_FEATURES,
        blocks: Sequence[int] = FULL_BLOCKS,
        strides: Sequence[int | Sequence[int]] | None = None,
        kernel_sizes: int | Sequence[int | Sequence[int]] = 3,
        decoder_convs: int | Sequence[int] = 1,
        shared_decoder_stages: int = 1,
        cls_num_classes: Sequence[int] = (1, len(LOCATIONS)),
        cls_query_nums: Sequence[int] = (2, 16),
        modality_classes: int = len(MODALITIES),
        modality_queries: int = 4,
        num_heads: int = 4,
        deep_supervision: bool = True,
        conv_bias: bool = True,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        n = len(features)
        if n < 2:
            raise ValueError(f"need at least two encoder stages, got features={list(features)}")
        if not 0 <= shared_decoder_stages <= n - 1:
            raise ValueError(f"shared_decoder_stages must be in 0..{n - 1}, got {shared_decoder_stages}")
        if len(cls_num_classes) != 2 or len(cls_query_nums) != 2:
            raise ValueError("cls_num_classes and cls_query_nums describe the two heads (present, locations)")
        if features[-1] % num_heads:
            raise ValueError(f"bottleneck width {features[-1]} is not divisible by num_heads={num_heads}")
        blocks = _per_stage(blocks, n, "blocks")
        strides = _per_stage(strides if strides is not None else [1] + [2] * (n - 1), n, "strides")
        kernels = _per_stage(kernel_sizes, n, "kernel_sizes")
        dec_convs = _per_stage(decoder_convs, n - 1, "decoder_convs")

        self.in_channels = in_channels
        self.out_channels_1 = out_channels_1
        self.out_channels_2 = out_channels_2
        self.features = list(features)
        self.strides = strides
        self.shared_decoder_stages = shared_decoder_stages
        self.deep_supervision = deep_supervision
        self.activation_checkpointing = activation_checkpointing

        conv = nn.Conv3d
        layer_kw: dict[str, Any] = {
            "conv_bias": conv_bias, "norm_op": nn.InstanceNorm3d, "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": nn.LeakyReLU,
            "nonlin_kwargs": {"negative_slope": 1e-2, "inplace": True},
        }

        self.conv_encoder_blocks = nn.ModuleList(
            StackedResidualBlocks(blocks[i], conv, in_channels if i == 0 else features[i - 1], features[i],
                                  kernels[i], strides[i], block=BasicBlockD, **layer_kw)
            for i in range(n)
        )

        transp = get_matching_convtransp(conv_op=conv)

        def up(s: int) -> nn.Module:
            deep = n - 1 - s
            return transp(features[deep], features[deep - 1], strides[deep], strides[deep], bias=conv_bias)

        def dec(s: int) -> nn.Module:
            deep = n - 1 - s
            return StackedConvBlocks(dec_convs[deep - 1], conv, 2 * features[deep - 1], features[deep - 1],
                                     kernels[deep], 1, nonlin_first=False, **layer_kw)

        shared = range(shared_decoder_stages)
        branched = range(shared_decoder_stages, n - 1)
        self.transpconvs = nn.ModuleList(up(s) for s in shared)
        self.decoder_blocks = nn.ModuleList(dec(s) for s in shared)
        self.transpconvs_last_two_1 = nn.ModuleList(up(s) for s in branched)
        self.transpconvs_last_two_2 = nn.ModuleList(up(s) for s in branched)
        self.decoder_blocks_last_two_1 = nn.ModuleList(dec(s) for s in branched)
        self.decoder_blocks_last_two_2 = nn.ModuleList(dec(s) for s in branched)
        self.seg_layers_1 = nn.ModuleList(conv(features[n - 2 - s], out_channels_1, 1) for s in range(n - 1))
        self.seg_layers_2 = nn.ModuleList(conv(features[n - 2 - s], out_channels_2, 1) for s in range(n - 1))

        width = features[-1]
        self.cls_head_list = nn.ModuleList(
            ClassificationHead(width, q, c, num_heads) for c, q in zip(cls_num_classes, cls_query_nums)
        )
        self.cls_modality_head = ClassificationHead(width, modality_queries, modality_classes, num_heads)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> ResEncoderUNetTwoSegWithCls:
        """Build from a training stage's parameters (``features``, ``blocks``; see
        ``engine/profiles.toml``), all other sizes at their defaults unless overridden."""
        features = list(params["features"])
        blocks = list(params["blocks"])
        if len(blocks) != len(features):
            raise ValueError(f"features {features} and blocks {blocks} must have the same length")
        return cls(features=features, blocks=blocks, **overrides)

    def _run(self, fn: Callable[..., Tensor], *inputs: Tensor) -> Tensor:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *inputs, use_reentrant=False)
        return fn(*inputs)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder outputs of every stage, highest resolution first; the last is the bottleneck."""
        skips = []
        for stage in self.conv_encoder_blocks:
            x = self._run(stage, x)
            skips.append(x)
        return skips

    def classify(self, x: Tensor, with_modality: bool = False) -> ClassificationOutput:
        """Classification-only forward (encoder + heads, no decoders) for fast inference."""
        bottleneck = self.encode(x)[-1]
        present, locations = (head(bottleneck) for head in self.cls_head_list)
        modality = self.cls_modality_head(bottleneck) if with_modality else None
        return ClassificationOutput(present, locations, modality)

    def forward(self, x: Tensor) -> StageTwoOutput:
        """Full forward: both decoders and all three heads; see ``StageTwoOutput``."""
        skips = self.encode(x)
        bottleneck = skips[-1]
        present, locations = (head(bottleneck) for head in self.cls_head_list)
        modality = self.cls_modality_head(bottleneck)

        n_dec = len(skips) - 1
        seg1: list[Tensor] = []
        seg2: list[Tensor] = []
        x1 = x2 = bottleneck
        for s in range(n_dec):
            skip = skips[-(s + 2)]
            last = s == n_dec - 1
            if s < self.shared_decoder_stages:
                x1 = x2 = self._run(partial(_up_step, self.transpconvs[s], self.decoder_blocks[s]), x1, skip)
            else:
                b = s - self.shared_decoder_stages
                step1 = partial(_up_step, self.transpconvs_last_two_1[b], self.decoder_blocks_last_two_1[b])
                step2 = partial(_up_step, self.transpconvs_last_two_2[b], self.decoder_blocks_last_two_2[b])
                x1 = self._run(step1, x1, skip)
                x2 = self._run(step2, x2, skip)
            if self.deep_supervision or last:
                seg1.append(self.seg_layers_1[s](x1))
                seg2.append(self.seg_layers_2[s](x2))
        return StageTwoOutput(seg1[::-1], seg2[::-1], present, locations, modality)


#: The original's class name, so that code and plans naming it keep working.
ResEncoderUNet_two_seg_with_cls_modality = ResEncoderUNetTwoSegWithCls
