"""Benchmark of the job manager: launch latency and job listing on a big database.

    .venv/bin/python bench/bench_jobs.py [--launches 15] [--jobs 10000] [--metrics 1000000]

1. ``rsna-tui run`` returning -> the job reading ``running`` (target: median <= 0.5 s). A stage of
   this file that sleeps is registered with ``RSNA_TUI_EXTRA_STAGES``; after the CLI returns, this
   process refreshes the job (fold + liveness check, as any CLI command does) every 10 ms.
2. ``rsna-tui jobs --json`` and the store queries behind it with 10,000 jobs and 1,000,000 metric
   rows (target: <= 0.3 s), plus ``show --json`` of one job.

Baselines measured in the same run: starting a bare interpreter (``python -c pass``) and importing
the CLI module, so the figures can be read against what any Python command costs on this machine.
Prints figures; not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.stages import Stage

REPO = Path(__file__).resolve().parents[1]

#: The stage the launch benchmark runs; parameterless, so it needs no profile entry.
STAGES = {"bench-sleep": Stage("bench-sleep", "Sleep a second", "bench_jobs:sleep_a_second", ())}


def sleep_a_second(params: dict, ctx: object) -> None:
    time.sleep(1.0)


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO / "bench", check=True)
    return time.perf_counter() - start, result


def _median(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def bench_baselines(env: dict[str, str], n: int = 7) -> tuple[float, float]:
    bare = [_timed([sys.executable, "-c", "pass"], env)[0] for _ in range(n)]
    cli_import = [_timed([sys.executable, "-c", "import rsna_tui.cli"], env)[0] for _ in range(n)]
    print(f"baseline  python -c pass:               {_median(bare)}")
    print(f"baseline  python -c 'import rsna_tui.cli': {_median(cli_import)}")
    return statistics.median(bare), statistics.median(cli_import)


def bench_launch(root: Path, env: dict[str, str], launches: int, bare: float) -> None:
    from rsna_tui.jobs.manager import JobManager
    from rsna_tui.workspace import Workspace

    cli = [sys.executable, "-m", "rsna_tui", "--workspace", str(root)]
    manager = JobManager(Workspace(root))
    latencies, cli_times, invoked = [], [], []
    for _ in range(launches):
        elapsed, result = _timed([*cli, "run", "--stage", "bench-sleep", "--json"], env)
        returned = time.perf_counter()
        job_id = json.loads(result.stdout)["id"]
        while True:
            manager.refresh([job_id])
            status = manager.job(job_id).status
            if status != "starting":
                break
            time.sleep(0.01)
        latencies.append(time.perf_counter() - returned)
        cli_times.append(elapsed)
        invoked.append(elapsed + latencies[-1])
        if status != "running":
            raise SystemExit(f"job {job_id} went to {status} instead of running")
        time.sleep(0.2)
    median = statistics.median(latencies)
    print(f"launch    rsna-tui run (CLI wall time):  {_median(cli_times)}")
    print(f"launch    run invoked -> running:        {_median(invoked)}")
    print(f"launch    run returned -> running:       {_median(latencies)}"
          f"  [target <= 0.5 s: {'met' if median <= 0.5 else 'MISSED'}]")
    print(f"launch    (the runner reports `started` before the CLI itself has exited; bare interpreter {bare:.3f} s)")
    for job in manager.store.active_jobs():
        manager.cancel(job.id, grace=2)
    manager.close()


def populate(root: Path, jobs: int, metrics: int) -> None:
    from rsna_tui.jobs.store import Store

    rng = random.Random(0)
    stages = ["convert", "stage1-data", "train2d", "roi", "train3d", "finetune1", "finetune2", "predict", "evaluate"]
    statuses = ["succeeded"] * 8 + ["failed", "cancelled", "lost"]
    per_job = max(1, metrics // jobs)
    names = ["train_loss", "val_loss", "pseudo_dice", "lr", "epoch_time"]
    t0 = time.time() - 30 * 86400
    with Store(root / "jobs.db") as store, store.write() as conn:
        conn.executemany(
            "INSERT INTO jobs (stage, profile, params, status, backend, attempt, depends_on, gpu, resume, created_at, "
            "started_at, finished_at, exit_code, events_offset, progress, message) "
            "VALUES (?, 'full', ?, ?, 'local', 1, '[]', 1, 0, ?, ?, ?, 0, 0, 1.0, 'done')",
            [
                (rng.choice(stages), json.dumps({"epochs": 1000, "fold": i % 5, "dataset": "rsna", "size": 224}),
                 rng.choice(statuses), t0 + i * 60, t0 + i * 60 + 1, t0 + i * 60 + 50)
                for i in range(jobs)
            ],
        )
        rows = (
            (1 + i // per_job, (i % per_job) // len(names), names[i % len(names)], rng.random(), t0 + i)
            for i in range(metrics)
        )
        conn.executemany("INSERT INTO metrics (job_id, step, name, value, t) VALUES (?, ?, ?, ?, ?)", rows)


def bench_listing(root: Path, env: dict[str, str], jobs: int, metrics: int, cli_import: float) -> None:
    from rsna_tui.jobs.manager import JobManager
    from rsna_tui.workspace import Workspace

    cli = [sys.executable, "-m", "rsna_tui", "--workspace", str(root)]
    empty = [_timed([*cli, "jobs", "--json"], env)[0] for _ in range(7)]  # the fixed cost of any command
    start = time.perf_counter()
    populate(root, jobs, metrics)
    print(f"setup     {jobs} jobs and {metrics} metric rows written in {time.perf_counter() - start:.1f} s")
    wall, size = [], 0
    for _ in range(7):
        elapsed, result = _timed([*cli, "jobs", "--json"], env)
        wall.append(elapsed)
        size = len(json.loads(result.stdout))
    show = [_timed([*cli, "show", str(jobs // 2), "--json"], env)[0] for _ in range(7)]
    in_process, objects, last = [], [], []
    for _ in range(7):
        start = time.perf_counter()
        manager = JobManager(Workspace(root))
        manager.refresh()
        manager.store.list_jobs_json()
        in_process.append(time.perf_counter() - start)
        start = time.perf_counter()
        json.dumps([j.to_json() for j in manager.store.list_jobs()])
        objects.append(time.perf_counter() - start)
        start = time.perf_counter()
        manager.store.last_metrics(jobs // 2)
        manager.store.metric_series(jobs // 2, "train_loss")
        manager.store.list_jobs(status="running")
        last.append(time.perf_counter() - start)
        manager.close()
    median, floor = statistics.median(wall), statistics.median(empty)
    print(f"listing   rsna-tui jobs --json, empty workspace:        {_median(empty)}  [the fixed cost of a command]")
    print(f"listing   rsna-tui jobs --json ({size} jobs, CLI wall time): {_median(wall)}"
          f"  [target <= 0.3 s: {'met' if median <= 0.3 else 'MISSED'}; {median - floor:+.3f} s over the empty"
          f" workspace; importing the CLI alone {cli_import:.3f} s]")
    print(f"listing   store behind it (open + refresh + JSON list):    {_median(in_process)}"
          f"  [target <= 0.3 s: {'met' if statistics.median(in_process) <= 0.3 else 'MISSED'}]")
    print(f"listing   same as JobRow objects + json.dumps (TUI path): {_median(objects)}")
    print(f"detail    rsna-tui show JOB --json (CLI wall time):       {_median(show)}")
    print(f"detail    last metrics + one curve + running jobs queries: {_median(last)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launches", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--metrics", type=int, default=1_000_000)
    args = parser.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "bench"), env.get("PYTHONPATH", "")])
    env["RSNA_TUI_EXTRA_STAGES"] = "bench_jobs:STAGES"
    os.environ.update(env)
    print(f"machine   {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    bare, cli_import = bench_baselines(env)
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        bench_launch(Path(tmp) / "launch", env, args.launches, bare)
        bench_listing(Path(tmp) / "listing", env, args.jobs, args.metrics, cli_import)


if __name__ == "__main__":
    main()
