"""CPU benchmark of two-stage inference (``engine.inference.Predictor``): seconds per series, DICOM in.

Two configurations, one stage-2 model each, 8 flip views, classification-only forward, random weights
(``engine.inference.synthetic``; timing does not depend on training):

* ``tiny``: the tiny profile (stage 2 at 32^3, features 4-8-16-32; stage-1 2D net 8-16-32 at 3 mm) on
  demo-cohort series of the tiny profile's size (64 pixels), read from DICOM.
* ``full``: the submitted size (stage 2 at 224^3, 109 M parameters; stage 1 an nnU-Net default-size 2D
  net, features 32..512, patch 448^2, 0.55 x 0.50 mm) on a real 120-slice 512^2 MR series from
  ``../shared/data`` (``niivue-demo-images/dicom``), read from DICOM. Slow on a CPU: about 2 minutes per
  view with the one torch thread ``select_device`` leaves on a 2-core machine, so one series.

Baseline measured in the same run: the same predictor with 1 view, so the ratio shows what the
8-view TTA costs (ideally 8x for stage 2; reading and stage 1 are shared).

    .venv/bin/python bench/bench_inference.py                      # tiny (4 series) and full (1 series)
    .venv/bin/python bench/bench_inference.py --skip-full          # tiny only, seconds
    .venv/bin/python bench/bench_inference.py --full-views 1       # full size, 1 view only (quick look)

Measured 2026-11-27 on the shared 2-core build machine (1 torch thread, other jobs running): tiny 0.42 s per
series (1 view 0.36 s); full 1015 s per series with 8 views (read 1.5, stage 1 44, stage 2 970; the first
call includes initialisation), 119 s with 1 view.

Prints one line per timed series (read / stage 1 / stage 2 / total seconds) and a summary per
configuration. The stage-1 stand-in is the pointwise "threshold" network (real nnU-Net predictor,
real architecture size), so its box is the bright part of each slice rather than a learnt vessel box.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("RSNA_TUI_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_MR = SHARED / "niivue-demo-images" / "dicom"

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"stage1": {"patch": (64, 64), "spacing": (3.0, 3.0), "features": (8, 16, 32)},
             "stage2": {"features": [4, 8, 16, 32], "blocks": [1, 1, 1, 1], "size": 32}},
    "full": {"stage1": {"patch": (448, 448), "spacing": (0.55, 0.5), "features": (32, 64, 128, 256, 512, 512, 512)},
             "stage2": {"features": [32, 64, 128, 256, 320, 320], "blocks": [1, 3, 4, 6, 6, 6], "size": 224}},
}


def environment(root: Path) -> None:
    """nnU-Net's variables (read at import) pointed at a scratch folder, as a job's workspace would."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(name, str(root / name))
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    os.environ.setdefault("nnUNet_n_proc_DA", "0")


def model_folders(root: Path, config: str, n_models: int = 1) -> tuple[Path, list[Path]]:
    """Untrained stage-1 and stage-2 folders of a configuration, in the real on-disk contracts."""
    from engine.inference.synthetic import write_stage2_model, write_threshold_stage1_model

    spec = CONFIGS[config]
    stage1 = write_threshold_stage1_model(root / f"{config}_stage1", **spec["stage1"])
    stage2 = [write_stage2_model(root / f"{config}_stage2_{i}", seed=i, fold=i, **spec["stage2"])
              for i in range(n_models)]
    return stage1, stage2


def demo_series(root: Path, n: int) -> list[Path]:
    """DICOM folders of a demo cohort at the tiny profile's size."""
    from engine.context import StageContext
    from engine.data.demo import run

    out = root / "demo"
    run({"n": max(4, 2 * n), "seed": 11, "size": 64, "test_fraction": 0.5, "defects": False,
         "test_tags_only": True, "out": str(out)}, StageContext.for_folder(root / "ws"))
    return sorted((out / "test" / "series").iterdir())[:n]


def time_series(predictor: Any, paths: list[Path], label: str) -> list[dict[str, float]]:
    rows = []
    for path in paths:
        result = predictor.predict_series(path)
        if result.status != "ok":
            raise RuntimeError(f"{path}: {result.status}: {result.reason}")
        t = {k: result.timings.get(k, 0.0) for k in ("read", "stage1", "stage2", "total")}
        print(f"  {label:<14} {path.name[-24:]:>24}  read {t['read']:7.2f}  stage1 {t['stage1']:7.2f}  "
              f"stage2 {t['stage2']:8.2f}  total {t['total']:8.2f} s", flush=True)
        rows.append(t)
    return rows


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.mean(r[k] for r in rows) for k in rows[0]}


def bench(config: str, paths: list[Path], views: int, root: Path, device: str = "cpu", n_models: int = 1,
          baseline_views: int | None = 1, warmup: bool = True, **predictor_kwargs: Any) -> dict[str, Any]:
    """Mean timings per series with ``views`` views and, for the ratio, with ``baseline_views``."""
    from engine.inference import Predictor

    stage1, stage2 = model_folders(root, config, n_models)
    result: dict[str, Any] = {"config": config, "series": len(paths), "models": n_models, "views": views}
    predictor = Predictor(stage1, stage2, tta=views, device=device, **predictor_kwargs)
    import torch

    print(f"{config}: {predictor.describe()}, {torch.get_num_threads()} torch thread(s)", flush=True)
    if warmup:
        predictor.predict_series(paths[0])  # first call pays for lazy initialisation
    result["timed"] = summary(time_series(predictor, paths, f"{views} view(s)"))
    if baseline_views and baseline_views != views:
        from engine.inference.predictor import VIEWS

        predictor.tta, predictor.views = baseline_views, VIEWS[baseline_views]
        result["baseline"] = summary(time_series(predictor, paths, f"{baseline_views} view(s)"))
        result["ratio_total"] = result["timed"]["total"] / result["baseline"]["total"]
        result["ratio_stage2"] = result["timed"]["stage2"] / result["baseline"]["stage2"]
    return result


def report(result: dict[str, Any]) -> None:
    t = result["timed"]
    line = (f"{result['config']}: {t['total']:.2f} s per series ({result['views']} views, {result['models']} model(s), "
            f"{result['series']} series; read {t['read']:.2f}, stage 1 {t['stage1']:.2f}, stage 2 {t['stage2']:.2f})")
    if "baseline" in result:
        line += (f"; 1 view: {result['baseline']['total']:.2f} s -> ratio {result['ratio_total']:.2f} "
                 f"(stage 2 alone {result['ratio_stage2']:.2f})")
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny-series", type=int, default=4)
    parser.add_argument("--full-series", type=int, default=1, help="timed real series (1 available)")
    parser.add_argument("--full-views", type=int, default=8, choices=(1, 4, 8))
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--no-full-baseline", action="store_true", help="skip the 1-view run of the full size")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        root = Path(tmp)
        environment(root)
        results.append(bench("tiny", demo_series(root, args.tiny_series), 8, root))
        report(results[-1])
        if not args.skip_full:
            if not REAL_MR.is_dir():
                print(f"full size skipped: {REAL_MR} not found (set RSNA_TUI_SHARED_DATA)")
            else:
                results.append(bench("full", [REAL_MR] * args.full_series, args.full_views, root,
                                     baseline_views=None if args.no_full_baseline else 1, warmup=False))
                report(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
