"""GPU benchmark of two-stage inference as submitted: both stage-2 models (the finetune1 + finetune2
ensemble) at 224^3, 8 flip views, mixed precision, DICOM reading included. Target: <= 8 s per series
(the competition allowed about 17 s: 2,500 series in 12 hours).

Models are untrained full-size folders (``engine.inference.synthetic``): two random 109 M-parameter
stage-2 networks and an nnU-Net default-size 2D stage-1 network (features 32..512, patch 448^2). Series
are real DICOM from ``../shared/data``: a 120-slice 512^2 MR, a 28-slice 512^2 CT and an 18.5-degree
gantry-tilt CT (the resampling fallback). One warm-up series, then ``--repeats`` passes over all.

    python bench/gpu_inference.py --json $OUT/gpu_inference.json            # default: 4 views per batch
    python bench/gpu_inference.py --sweep --json $OUT/gpu_inference.json     # also 1 and 8 views per batch

Without a CUDA device it prints a message and exits 0. ``--device cpu --config tiny`` runs the same
code path on the CPU (smoke test).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_inference as common  # noqa: E402  (the CPU benchmark's model and series helpers)

SERIES = ("niivue-demo-images/dicom", "dcm_qa_ct/In/Philips/S21570/S2010", "dcm_qa_ct/In/GE")
TARGET_SECONDS = 8.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--config", default="full", choices=tuple(common.CONFIGS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--view-batch", type=int, default=4)
    parser.add_argument("--sweep", action="store_true", help="also time 1 and 8 views per forward pass")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_inference: no CUDA device visible to torch; nothing to benchmark (use --device cpu for a smoke test)")
        return 0
    series = [common.SHARED / s for s in SERIES if (common.SHARED / s).is_dir()]
    if not series:
        print(f"gpu_inference: no real series under {common.SHARED}; set RSNA_TUI_SHARED_DATA")
        return 0
    if args.device == "cuda":
        print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    results = []
    batches = [args.view_batch] + ([b for b in (1, 8) if b != args.view_batch] if args.sweep else [])
    with tempfile.TemporaryDirectory(prefix="gpu_inference_") as tmp:
        root = Path(tmp)
        common.environment(root)
        for view_batch in batches:
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            result = common.bench(args.config, series * args.repeats, 8, root, device=args.device, n_models=2,
                                  baseline_views=None, warmup=True, view_batch=view_batch)
            result["view_batch"] = view_batch
            if args.device == "cuda":
                result["peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
            common.report(result)
            verdict = "meets" if result["timed"]["total"] <= TARGET_SECONDS else "misses"
            print(f"  view batch {view_batch}: {result['timed']['total']:.2f} s per series {verdict} the "
                  f"{TARGET_SECONDS:.0f} s target" + (f"; peak {result['peak_allocated_gb']:.1f} GiB allocated"
                                                     if "peak_allocated_gb" in result else ""), flush=True)
            results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
