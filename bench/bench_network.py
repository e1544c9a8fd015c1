"""CPU benchmark: forward + backward of the stage-2 network against dynamic-network-architectures'
``ResidualEncoderUNet`` of the same widths (same features, blocks, strides, one conv per decoder
stage, conv bias, instance norm, leaky ReLU, deep supervision), batch 1.

Our network has no stem but a second decoder branch (four decoder stages twice) and three attention
heads, so it does more work than the baseline; the issue's target is a ratio <= 1.4.

    .venv/bin/python bench/bench_network.py            # 64^3, 3 timed runs each, interleaved
    .venv/bin/python bench/bench_network.py --size 48 --repeats 5

Prints each network's convolution MACs, the seconds per forward+backward (median and minimum;
the minimum is the less disturbed figure on a shared machine) and the ratios.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

from engine.stage2.network import (
    FULL_BLOCKS,
    FULL_FEATURES,
    OUT_CHANNELS_1,
    ResEncoderUNetTwoSegWithCls,
)


def baseline() -> nn.Module:
    """DNA's residual-encoder U-Net with the same widths as the full stage-2 network."""
    return ResidualEncoderUNet(
        input_channels=1, n_stages=len(FULL_FEATURES), features_per_stage=list(FULL_FEATURES), conv_op=nn.Conv3d,
        kernel_sizes=3, strides=[1] + [2] * (len(FULL_FEATURES) - 1), n_blocks_per_stage=list(FULL_BLOCKS),
        num_classes=OUT_CHANNELS_1, n_conv_per_stage_decoder=1, conv_bias=True, norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        deep_supervision=True,
    )


def outputs(result: object) -> list[torch.Tensor]:
    """Every tensor of a network's output (a tensor, a list, or our StageTwoOutput)."""
    if isinstance(result, torch.Tensor):
        return [result]
    flat: list[torch.Tensor] = []
    for item in result:  # type: ignore[union-attr]
        flat.extend(outputs(item))
    return flat


def forward_macs(net: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every convolution in one forward pass (a load-independent reference:
    the backward pass costs about twice the forward of the same layers)."""
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.weight[0].numel()  # in/groups * k^3 for Conv3d, out/groups * k^3 for ConvTranspose3d
        positions = output[0, 0].numel() if isinstance(module, nn.Conv3d) else inputs[0][0, 0].numel()
        channels = module.out_channels if isinstance(module, nn.Conv3d) else module.in_channels
        total += positions * channels * kernel

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    return total


def step(net: nn.Module, x: torch.Tensor) -> float:
    """Seconds for one forward + backward (a scalar over every output, so every head gets gradient)."""
    net.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = sum(o.float().mean() for o in outputs(net(x)))
    loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="edge of the cubic input (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per network (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = {"ours": ResEncoderUNetTwoSegWithCls(), "dna_resenc_unet": baseline()}
    x = torch.randn(1, 1, args.size, args.size, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input 1x1x{args.size}^3, forward+backward")
    macs = {name: forward_macs(net, x) for name, net in nets.items()}
    for name, net in nets.items():
        print(f"  {name:16s} {sum(p.numel() for p in net.parameters()):>12,} parameters, "
              f"{macs[name] / 1e9:6.1f} GMAC forward (convolutions)")
        step(net, x)  # warm-up (allocator, oneDNN primitive caches)
    times: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.repeats):  # interleaved, so that load from other processes hits both alike
        for name, net in nets.items():
            times[name].append(step(net, x))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        runs = ", ".join(f"{v:.2f}" for v in t)
        print(f"  {name:16s} median {medians[name]:.2f} s, min {min(t):.2f} s  (runs: {runs})")
    ratio = medians["ours"] / medians["dna_resenc_unet"]
    best = min(times["ours"]) / min(times["dna_resenc_unet"])
    print(f"convolution MAC ratio ours / dna_resenc_unet = {macs['ours'] / macs['dna_resenc_unet']:.2f}")
    print(f"time ratio ours / dna_resenc_unet = {ratio:.2f} (medians), {best:.2f} (minima)  "
          f"target <= 1.4: {'met' if ratio <= 1.4 else 'NOT met'} on the medians")


if __name__ == "__main__":
    main()
