"""Benchmark: generating the default demo cohort (stage ``demo-data``, profile ``tiny``).

Target (issue 3): <= 30 s on 2 CPU cores. Prints wall and CPU seconds of the stage, and as a
baseline measured in the same run, the time pydicom alone takes to read and re-write every DICOM
file of the cohort (the floor of any generator that writes these files with pydicom), so the ratio
says how much the phantom, rendering and tables add on top of the file writing itself.

    .venv/bin/python bench/bench_demo_data.py [--profile tiny] [--set n=40 --set size=64]
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import pydicom

from engine.context import StageContext
from engine.stages import get_stage

TARGET_S = 30.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="parameter override")
    args = parser.parse_args()
    stage = get_stage("demo-data")
    with tempfile.TemporaryDirectory() as tmp:
        params = stage.resolve(args.profile, [*args.set, f"out={Path(tmp) / 'demo'}"])
        ctx = StageContext.for_folder(Path(tmp) / "ws")
        wall, cpu = time.perf_counter(), _cpu_seconds()
        stage.load()(params, ctx)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu

        files = sorted(Path(params["out"]).rglob("*.dcm"))
        megabytes = sum(p.stat().st_size for p in files) / 2 ** 20
        copy_dir = Path(tmp) / "resaved"
        copy_dir.mkdir()
        base_wall, base_cpu = time.perf_counter(), _cpu_seconds()
        for n, path in enumerate(files):
            pydicom.dcmread(path).save_as(copy_dir / f"{n}.dcm", enforce_file_format=True)
        base_wall, base_cpu = time.perf_counter() - base_wall, _cpu_seconds() - base_cpu

    shown = {k: v for k, v in params.items() if k != "out"}
    print(f"demo-data ({args.profile}) {shown}")
    print(f"  {params['n']} series, {len(files)} DICOM files, {megabytes:.1f} MiB")
    per_series = 1000 * wall / params["n"]
    print(f"  generation:        wall {wall:6.2f} s   cpu {cpu:6.2f} s   ({per_series:.0f} ms per series)")
    print(f"  baseline (pydicom read + re-write of every file): wall {base_wall:6.2f} s   cpu {base_cpu:6.2f} s")
    print(f"  ratio generation / baseline: wall {wall / base_wall:.2f}   cpu {cpu / base_cpu:.2f}")
    print(f"  target <= {TARGET_S:.0f} s wall on 2 cores: {'met' if wall <= TARGET_S else 'NOT met'}")


if __name__ == "__main__":
    main()
