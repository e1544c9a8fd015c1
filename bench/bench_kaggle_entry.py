"""CPU benchmark of the Kaggle entry (``engine.inference.kaggle``): what the gateway round trip costs.

Per series, the in-process local gateway copies the series' files into the shared folder, calls
``kaggle.predict`` (which predicts, then clears the shared folder) and checks the answer. Baseline in
the same run: ``Predictor.predict_series`` on the original folder, the same predictor, no copy, no
clearing, no frame conversion. Models: the tiny profile's untrained folders (``engine.inference.synthetic``,
8 views); series: demo-cohort series stripped to the competition's test tags, and the real 120-slice
512^2 MR series of ``../shared/data`` (``niivue-demo-images/dicom``) when present, where copying the
files costs most.

    .venv/bin/python bench/bench_kaggle_entry.py              # 4 demo series + the real MR series
    .venv/bin/python bench/bench_kaggle_entry.py --demo 8     # more demo series

Prints one line per series set: seconds per series through the gateway and directly, and the difference.

Measured 2026-12-01 on the shared 2-core build machine (other jobs running): demo series (38 files)
0.661 s per series through the gateway vs 0.588 s directly (+0.07 s); the real MR series (121 files,
512^2) 2.75 s vs 2.17 s (+0.58 s: copying and deleting its 61 MB).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_inference import REAL_MR, demo_series, environment, model_folders  # noqa: E402


def time_sets(series_sets: dict[str, list[Path]], stage1: Path, stage2: list[Path], share: Path) -> None:
    from engine.inference import gateway, kaggle

    predictor = gateway.configure(stage1_model=stage1, models=stage2, tta=8, device="cpu")
    kaggle._shared_dir = share  # what kaggle.serve sets before serving
    predictor.predict_series(next(iter(series_sets.values()))[0])  # warm-up: first-call initialisation
    for name, series in series_sets.items():
        direct = []
        for folder in series:
            started = time.perf_counter()
            predictor.predict_series(folder)
            direct.append(time.perf_counter() - started)
        through = []
        for folder in series:
            started = time.perf_counter()
            shared = kaggle.share_series(folder, share)
            kaggle.check_row(kaggle.predict(str(shared)), folder.name)
            through.append(time.perf_counter() - started)
            assert not any(share.iterdir()), "predict left files in the shared folder"
        d, t = statistics.mean(direct), statistics.mean(through)
        print(f"{name}: {len(series)} series, {sum(len(list(f.iterdir())) for f in series) // len(series)} files each: "
              f"gateway {t:.3f} s/series, direct (baseline) {d:.3f} s/series, difference {t - d:+.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=int, default=4, help="demo series to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-kaggle-") as tmp:
        root = Path(tmp)
        environment(root)
        stage1, stage2 = model_folders(root, "tiny")
        sets = {"demo 64^3": demo_series(root, args.demo)}
        if REAL_MR.is_dir():
            sets["real MR 512^2 x 120"] = [REAL_MR]
        time_sets(sets, stage1, stage2, root / "kaggle" / "shared")
        shutil.rmtree(root / "kaggle", ignore_errors=True)


if __name__ == "__main__":
    main()
