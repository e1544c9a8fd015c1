"""Benchmark of stage ``convert`` against plain dicom2nifti and dcm2niix, measured in one run.

Input: the real series of ../shared/data that all three tools convert (dicom2nifti's GE, Siemens,
Philips and Hitachi regression series, the Philips head CT, the 120-slice brain MR) plus a demo
cohort (``demo-data``, defect-free), in one Kaggle-layout folder (symlinks; the demo cohort's
tables and segmentations come along, so ``convert`` also writes masks, vessels and localizers).

Contenders, each writing gzip-compressed NIfTI (level 1, nibabel's default) to a fresh folder:
  ours      ``engine.data.convert.run`` with ``--workers`` processes (default 2)
  ours/1    the same with one worker (no pool): the per-series overhead of our extra work
  d2n       a serial loop of ``dicom2nifti.dicom_series_to_nifti(folder, out, reorient_nifti=False)``
  dcm2niix  a serial loop of ``dcm2niix -z i -1 -b n`` (the native peer; PyPI package ``dcm2niix``)
Each contender runs ``--repeat`` times; the best wall time counts (the machine is shared), with that
attempt's CPU seconds (not available for the pool, whose workers are the forkserver's children).
The ratios are printed against dicom2nifti (target: ours <= 0.6x) and against dcm2niix. On a
machine whose cores are busy with other work, more workers cannot shorten the wall time: read
the load average printed first.

    .venv/bin/python bench/bench_convert.py [--workers 2] [--repeat 3] [--demo-n 40] [--demo-size 64]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("RSNA_TUI_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_SERIES = {
    "real.d2n_ge": "dicom2nifti/tests/data/ge/anatomical/001",
    "real.d2n_siemens": "dicom2nifti/tests/data/siemens/anatomical/001",
    "real.d2n_philips": "dicom2nifti/tests/data/philips/anatomical/001",
    "real.d2n_hitachi": "dicom2nifti/tests/data/hitachi/anatomical/001",
    "real.ct_philips": "dcm_qa_ct/In/Philips/S21570/S2010",
    "real.mr_t1": "niivue-demo-images/dicom",
}


def build_dataset(root: Path, demo_n: int, demo_size: int) -> Path:
    """A Kaggle-layout folder: the demo cohort's training split plus the real series, all symlinked."""
    from engine.context import StageContext
    from engine.data.demo import run as demo_run

    demo = root / "demo"
    demo_run({"out": str(demo), "n": demo_n, "seed": 0, "size": demo_size, "test_fraction": 0.0,
              "defects": False, "test_tags_only": False}, StageContext.for_folder(root / "demo-ws"))
    dataset = root / "ws" / "datasets" / "bench"
    (dataset / "series").mkdir(parents=True)
    for name in ("train.csv", "train_localizers.csv", "segmentations"):
        if (demo / name).exists():
            (dataset / name).symlink_to(demo / name)
    for folder in sorted((demo / "series").iterdir()):
        (dataset / "series" / folder.name).symlink_to(folder)
    for name, relative in REAL_SERIES.items():
        (dataset / "series" / name).symlink_to(SHARED / relative)
    return dataset


def run_ours(dataset: Path, out: Path, workers: int) -> int:
    from engine.context import StageContext
    from engine.data.convert import run

    ctx = StageContext.for_folder(out)
    (out / "datasets").mkdir(exist_ok=True)
    link = out / "datasets" / "bench"
    if not link.exists():
        link.symlink_to(dataset)
    run({"dataset": "bench", "split": "train", "workers": workers, "seed": 0}, ctx)
    return int(ctx.reporter.metrics("series_failed")[-1])


def run_dicom2nifti(dataset: Path, out: Path) -> int:
    import dicom2nifti

    out.mkdir(parents=True)
    failed = 0
    for folder in sorted((dataset / "series").iterdir()):
        try:
            dicom2nifti.dicom_series_to_nifti(str(folder), str(out / f"{folder.name}.nii.gz"), reorient_nifti=False)
        except Exception:  # counted, as our table would
            failed += 1
    return failed


def run_dcm2niix(dataset: Path, out: Path, binary: str) -> int:
    out.mkdir(parents=True)
    failed = 0
    for folder in sorted((dataset / "series").iterdir()):
        done = subprocess.run([binary, "-z", "i", "-1", "-b", "n", "-o", str(out), "-f", folder.name,
                               str(folder.resolve())], capture_output=True, text=True)
        failed += done.returncode != 0
    return failed


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the pool's workers are children of the
    forkserver, not of this process, so a pooled run's CPU time is not seen here)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _spin(n: int = 4_000_000) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def parallel_capacity(workers: int) -> float:
    """How much faster ``workers`` processes finish ``workers`` equal CPU-bound jobs than one process
    running them in turn: ``workers`` on an idle machine, about 1 when other work holds the cores."""
    start = time.perf_counter()
    for _ in range(workers):
        _spin()
    serial = time.perf_counter() - start
    context = multiprocessing.get_context("forkserver")
    start = time.perf_counter()
    processes = [context.Process(target=_spin) for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return serial / (time.perf_counter() - start)


def best_of(repeat: int, work: Callable[[Path], int], scratch: Path, label: str) -> tuple[float, float, int]:
    """(best wall seconds, CPU seconds of that attempt, failures)."""
    runs, failed = [], 0
    for attempt in range(repeat):
        out = scratch / f"{label}-{attempt}"
        start, cpu = time.perf_counter(), _cpu()
        failed = work(out)
        runs.append((time.perf_counter() - start, _cpu() - cpu))
        shutil.rmtree(out, ignore_errors=True)
    print(f"  {label:9s} wall " + "  ".join(f"{t:6.2f}s" for t, _ in runs) + "   cpu " +
          "  ".join(f"{c:6.2f}s" for _, c in runs), flush=True)
    wall, cpu = min(runs)
    return wall, cpu, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--demo-n", type=int, default=40)
    parser.add_argument("--demo-size", type=int, default=64)
    args = parser.parse_args()
    binary = shutil.which("dcm2niix", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if binary is None:
        sys.exit("dcm2niix not found: .venv/bin/pip install --no-deps dcm2niix (the 'bench' extra)")
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        root = Path(tmp)
        dataset = build_dataset(root, args.demo_n, args.demo_size)
        series = sorted((dataset / "series").iterdir())
        files = sum(1 for s in series for p in s.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for s in series for p in s.rglob("*") if p.is_file()) / 2**20
        print(f"{len(series)} series ({len(REAL_SERIES)} real, {len(series) - len(REAL_SERIES)} demo of "
              f"{args.demo_size}^2 px), {files} files, {size:.0f} MiB; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}; best of {args.repeat}")
        results = {
            "d2n": best_of(args.repeat, lambda out: run_dicom2nifti(dataset, out), root, "d2n"),
            "dcm2niix": best_of(args.repeat, lambda out: run_dcm2niix(dataset, out, binary), root, "dcm2niix"),
            "ours/1": best_of(args.repeat, lambda out: run_ours(dataset, out, 1), root, "ours/1"),
            "ours": best_of(args.repeat, lambda out: run_ours(dataset, out, args.workers), root, "ours"),
        }
    print(f"\n{'contender':10s} {'wall s':>8s} {'cpu s':>7s} {'failed':>6s} {'vs d2n':>7s} {'vs dcm2niix':>11s}")
    for name, (seconds, cpu, failed) in results.items():
        label = f"ours/{args.workers}" if name == "ours" else name
        cpu_text = "    n/a" if name == "ours" and args.workers > 1 else f"{cpu:7.2f}"
        print(f"{label:10s} {seconds:8.2f} {cpu_text} {failed:6d} {seconds / results['d2n'][0]:6.2f}x "
              f"{seconds / results['dcm2niix'][0]:10.2f}x")
    capacity = parallel_capacity(args.workers)
    print(f"\nparallel capacity now: {args.workers} processes run {capacity:.2f}x faster than one "
          f"(an idle machine gives ~{args.workers}x; load average {os.getloadavg()[0]:.1f})")
    ratio = results["ours"][0] / results["d2n"][0]
    print(f"\nours with {args.workers} workers / serial dicom2nifti = {ratio:.2f}x (target <= 0.60x: "
          f"{'met' if ratio <= 0.6 else 'NOT met'}); / dcm2niix = {results['ours'][0] / results['dcm2niix'][0]:.2f}x")


if __name__ == "__main__":
    main()
