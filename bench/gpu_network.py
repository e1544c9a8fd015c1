"""GPU benchmark of the full stage-2 network: one training step at 224^3, batch 2, mixed precision
(the submitted setting; the original needed about 53 GB on an A100 80GB, our target is <= 53 GB).

A step is what the trainer does: forward under autocast, the full stage-2 loss (both branches with
deep supervision, the three heads), backward with a GradScaler (fp16), gradient clipping at 12 and an
SGD (Nesterov) update. Reported per configuration: mean step time, peak allocated and reserved CUDA
memory. The default configuration is the one training uses; the options below change memory/speed
only, never the model or its results (bf16 changes the rounding, not the model):

    --channels-last   channels_last_3d memory format for weights and input
    --checkpointing   activation checkpointing of every encoder and decoder stage
    --bf16            autocast to bfloat16 instead of float16 (no GradScaler needed)
    --sweep           run default, then each option alone, in one process (one short call)

    python bench/gpu_network.py --sweep --json $OUT/gpu_network.json

Without a CUDA device it prints a message and exits 0. ``--device cpu --size 64 --batch 1 --steps 1 --warmup 0`` runs
the same code path on the CPU as a smoke test (in float32: CPU half-precision convolutions are very slow).
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from engine.stage2.losses import StageTwoLoss
from engine.stage2.network import ResEncoderUNetTwoSegWithCls


@dataclass
class Result:
    config: str
    step_s: float | None
    peak_allocated_gib: float | None
    peak_reserved_gib: float | None
    loss: float | None
    note: str = ""


@dataclass(frozen=True)
class Config:
    name: str
    channels_last: bool = False
    checkpointing: bool = False
    bf16: bool = False


def build(config: Config, device: torch.device) -> ResEncoderUNetTwoSegWithCls:
    net = ResEncoderUNetTwoSegWithCls(activation_checkpointing=config.checkpointing).to(device)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    return net.train()


def run(config: Config, args: argparse.Namespace, device: torch.device) -> Result:
    torch.manual_seed(0)
    dtype = torch.bfloat16 if config.bf16 else torch.float16
    amp = device.type == "cuda"  # CPU half-precision convolutions are very slow: the CPU smoke run is fp32
    net = build(config, device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and dtype == torch.float16)
    loss_fn = StageTwoLoss(n_outputs=len(net.features) - 1).to(device)
    shape = (args.batch, 1, args.size, args.size, args.size)
    x = torch.randn(shape, device=device)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    labels = torch.randint(0, 27, shape, device=device, dtype=torch.uint8)
    present = torch.randint(0, 2, (args.batch,), device=device).float()
    locations = torch.randint(0, 2, (args.batch, 13), device=device).float()
    modality = torch.randint(0, 4, (args.batch,), device=device)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            total = loss_fn(net(x), labels, present, locations, modality).total
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        scaler.step(optimizer)
        scaler.update()
        return float(total.detach())

    cuda = device.type == "cuda"
    try:
        for _ in range(args.warmup):
            step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss = float("nan")
        for _ in range(args.steps):
            loss = step()
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / max(args.steps, 1)
        alloc = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        reserved = torch.cuda.max_memory_reserved() / 2**30 if cuda else None
        return Result(config.name, seconds, alloc, reserved, loss)
    except torch.OutOfMemoryError as exc:
        return Result(config.name, None, None, None, None, f"out of memory: {str(exc).splitlines()[0]}")


def release(device: torch.device) -> None:
    """Free what the previous configuration left, so that each peak is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def inference_seconds(args: argparse.Namespace, device: torch.device) -> float:
    """Classification-only forward of 8 TTA views (batch 8) under fp16 autocast, as predict runs it."""
    net = ResEncoderUNetTwoSegWithCls().to(device).eval()
    x = torch.randn(8, 1, args.size, args.size, args.size, device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        net.classify(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(3):
            net.classify(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="edge of the cubic input (default 224)")
    parser.add_argument("--batch", type=int, default=2, help="volumes per step (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="default, then each option alone")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_network: no CUDA device available - nothing measured (run it on a GPU machine).")
        return 0
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    print(f"input {args.batch}x1x{args.size}^3, {args.warmup} warm-up + {args.steps} timed training steps")

    if args.sweep:
        configs = [Config("default"), Config("channels-last", channels_last=True),
                   Config("checkpointing", checkpointing=True), Config("bf16", bf16=True)]
    else:
        parts = [n for n, on in (("channels-last", args.channels_last), ("checkpointing", args.checkpointing),
                                 ("bf16", args.bf16)) if on]
        configs = [Config("+".join(parts) or "default", args.channels_last, args.checkpointing, args.bf16)]

    results = []
    for config in configs:
        result = run(config, args, device)
        release(device)
        results.append(result)
        if result.step_s is None:
            print(f"  {config.name:28s} {result.note}")
            continue
        memory = (f"peak allocated {result.peak_allocated_gib:6.1f} GiB ({result.peak_allocated_gib * 1.073741824:.1f} GB), "
                  f"reserved {result.peak_reserved_gib:6.1f} GiB" if result.peak_allocated_gib is not None
                  else "peak memory n/a on CPU")
        print(f"  {config.name:28s} step {result.step_s:6.3f} s  {memory}  loss {result.loss:.4f}", flush=True)
    tta = inference_seconds(args, device)
    precision = "fp16 autocast" if device.type == "cuda" else "float32"
    print(f"classification-only forward, 8 TTA views (batch 8, {precision}): {tta:.3f} s")
    if args.json:
        payload = {"size": args.size, "batch": args.batch, "steps": args.steps, "device": str(device),
                   "results": [asdict(r) for r in results], "tta8_classify_s": tta}
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
