"""Benchmark of the Textual app on a big workspace: first paint, one refresh, opening a long curve.

    .venv/bin/python bench/bench_app.py [--jobs 10000] [--metrics 1000000] [--runs 5]

With 10,000 jobs and 1,000,000 metric rows (built as ``bench_jobs.populate`` does) plus one job
with a 1,000-epoch curve:

1. ``rsna-tui`` started in a real terminal (tmux) -> the Jobs screen painted with its rows
   (target <= 1.0 s; the bare interpreter's start is printed beside it). Measured by polling
   ``tmux capture-pane`` every 10 ms, so the figure includes up to one poll of slack.
2. One refresh cycle while 3 jobs run and report progress (target <= 100 ms): the poll worker's
   cycle (fold, liveness, schedule, reading the changed rows) and the job table's update of those
   rows on the UI thread, measured inside a headless app.
3. Opening a job detail with a 1,000-epoch curve (target <= 300 ms): from the key press to the
   curves drawn, inside a headless app.

Prints figures; not a test.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from bench_jobs import populate  # noqa: E402
from engine.stages import Stage  # noqa: E402

#: A job that reports progress every 50 ms for a minute (the refresh benchmark's running jobs).
STAGES = {"bench-busy": Stage("bench-busy", "Report progress for two minutes", "bench_app:busy", ())}


def busy(params: dict, ctx: object) -> None:
    steps = int(120 / 0.05)
    for step in range(steps):
        ctx.reporter.progress(step, steps, f"step {step}")  # type: ignore[attr-defined]
        time.sleep(0.05)


def _median(values: list[float], unit: float = 1.0, suffix: str = "s") -> str:
    m = [v * unit for v in values]
    return f"median {statistics.median(m):.3f} {suffix} (min {min(m):.3f}, max {max(m):.3f}, n={len(m)})"


def add_long_curve(root: Path, epochs: int = 1000) -> int:
    """One finished train3d job with ``epochs`` epochs of six metrics and resource samples."""
    from rsna_tui.jobs.store import JobRow, Store

    t0 = time.time() - 86400
    with Store(root / "jobs.db") as store:
        job = store.insert_job(JobRow(id=0, stage="train3d", profile="full", params={"dataset": "rsna", "epochs": epochs},
                                      status="succeeded", created_at=t0, started_at=t0, finished_at=t0 + epochs * 60))
        names = ("train_loss", "val_loss", "pseudo_dice", "ema_pseudo_dice", "lr", "epoch_time")
        with store.write() as conn:
            conn.executemany("INSERT INTO metrics (job_id, step, name, value, t) VALUES (?, ?, ?, ?, ?)", [
                (job.id, e, n, math.exp(-e / 300) + 0.01 * k, t0 + e * 60) for e in range(epochs) for k, n in enumerate(names)
            ])
            conn.executemany(
                "INSERT INTO resource_samples (job_id, t, cpu_percent, rss_bytes, gpu_mem_bytes, gpu_util, proc_gpu_mem_bytes)"
                " VALUES (?, ?, 100, ?, NULL, NULL, NULL)", [(job.id, t0 + i * 5, 2**30) for i in range(2000)],
            )
    return job.id


def bench_first_paint(root: Path, env: dict[str, str], runs: int, jobs: int) -> None:
    tmux = shutil.which("tmux")
    bare = []
    for _ in range(7):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - start)
    if not tmux:
        print("paint     skipped: no tmux (apt-get install tmux)")
        return
    exports = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith(("RSNA_TUI", "PYTHONPATH")))
    marker = f"of {jobs + 1} jobs"  # "250 of 10001 jobs": the table holds a window of the newest
    times = []
    for run in range(runs):
        socket = f"bench-app-{os.getpid()}-{run}"
        command = f"env {exports} TERM=xterm-256color {sys.executable} -m rsna_tui --workspace {root}"
        start = time.perf_counter()
        subprocess.run([tmux, "-L", socket, "new-session", "-d", "-s", "b", "-x", "120", "-y", "40", command], check=True)
        try:
            while True:
                screen = subprocess.run([tmux, "-L", socket, "capture-pane", "-p", "-t", "b"], capture_output=True, text=True).stdout
                if marker in screen and f"{jobs + 1}  train3d" in screen:
                    times.append(time.perf_counter() - start)
                    break
                if time.perf_counter() - start > 30:
                    raise SystemExit(f"the Jobs screen never showed {marker!r}:\n{screen}")
                time.sleep(0.01)
        finally:
            subprocess.run([tmux, "-L", socket, "kill-server"], capture_output=True)
        time.sleep(0.5)
    median = statistics.median(times)
    print(f"baseline  python -c pass:                     {_median(bare)}")
    print(f"paint     rsna-tui -> Jobs screen with rows:  {_median(times)}"
          f"  [target <= 1.0 s: {'met' if median <= 1.0 else 'MISSED'}; bare interpreter {statistics.median(bare):.3f} s]")


async def bench_in_app(root: Path, long_job: int, cycles: int) -> None:
    from rsna_tui.app.app import RsnaApp
    from rsna_tui.app.messages import JobsChanged
    from rsna_tui.app.screens.detail import JobDetailScreen
    from rsna_tui.app.widgets.curves import CurvePanel
    from rsna_tui.app.widgets.job_table import JobTable
    from rsna_tui.jobs.manager import JobManager
    from rsna_tui.workspace import Workspace

    manager = JobManager(Workspace(root))
    running = [manager.submit("bench-busy") for _ in range(3)]
    ui_times: list[float] = []
    original = JobTable.apply

    def timed_apply(self, lines, full=False):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        original(self, lines, full)
        if not full:
            ui_times.append(time.perf_counter() - start)

    JobTable.apply = timed_apply  # type: ignore[method-assign]
    cycle_times: list[float] = []
    changed_rows: list[int] = []

    def hook(message: object) -> None:
        if isinstance(message, JobsChanged) and not message.full:
            cycle_times.append(message.seconds)
            changed_rows.append(len(message.rows))

    app = RsnaApp(Workspace(root), poll_interval=0.2)
    try:
        async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
            while not app.loaded.is_set():
                await pilot.pause(0.05)
            while len(cycle_times) < cycles:
                await pilot.pause(0.1)
            quiet = app.poll_seconds
            seconds = [c for c in cycle_times if c]
            print(f"refresh   poll worker cycle, 3 jobs running:  {_median(seconds, 1000, 'ms')}"
                  f"  [target <= 100 ms: {'met' if statistics.median(seconds) <= 0.1 else 'MISSED'};"
                  f" {statistics.median(changed_rows):.0f} changed rows per cycle]")
            print(f"refresh   job table update of those rows:     {_median(ui_times, 1000, 'ms')}")
            print(f"refresh   worker + table (sum of medians):    {1000 * (statistics.median(seconds) + statistics.median(ui_times)):.1f} ms;"
                  f" a cycle with nothing new: {1000 * quiet:.1f} ms")
            opens = []
            for _ in range(5):
                start = time.perf_counter()
                await app.run_action(f"open_job({long_job})")
                while not (isinstance(app.screen, JobDetailScreen) and app.screen.loads):
                    await pilot.pause(0.005)
                curves = app.screen.query_one(CurvePanel)
                assert len(curves.series["train_loss"]) == 1000
                await pilot.pause(0)  # the redraw
                opens.append(time.perf_counter() - start)
                await pilot.press("escape")
                await pilot.pause(0.2)
            print(f"detail    open a job with a 1,000-epoch curve: {_median(opens)}"
                  f"  [target <= 0.3 s: {'met' if statistics.median(opens) <= 0.3 else 'MISSED'}; 6 metrics, 6,000 points, 2,000 samples]")
    finally:
        JobTable.apply = original  # type: ignore[method-assign]
        for job in running:
            manager.cancel(job.id, grace=2)
        manager.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--metrics", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args()
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench"), os.environ.get("PYTHONPATH", "")]),
        "RSNA_TUI_EXTRA_STAGES": "bench_app:STAGES",
    }
    os.environ.update(env)
    print(f"machine   {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        root = Path(tmp) / "ws"
        start = time.perf_counter()
        populate(root, args.jobs, args.metrics)
        long_job = add_long_curve(root)
        print(f"setup     {args.jobs} jobs, {args.metrics} metric rows and a 1,000-epoch job in {time.perf_counter() - start:.1f} s")
        bench_first_paint(root, env, args.runs, args.jobs)
        asyncio.run(bench_in_app(root, long_job, args.cycles))


if __name__ == "__main__":
    main()
