"""Benchmark of the Slurm backend on a private single-node Slurm (started here, as the tests do).

    .venv/bin/python bench/bench_slurm.py [--jobs 200]

Submits N tiny jobs (a stage of this file that does nothing) twice: as one array
(``submit_array``: one ``sbatch --array``) and as N single jobs (``submit``: one ``sbatch`` each), and
prints the submission time per job (target: <= 50 ms per job in an array), the Slurm commands one
refresh issues with 2N active jobs (target: one ``squeue``, whatever N), the time of such a refresh,
and the time to fold the states once all jobs have ended. The benchmark holds the workspace's
scheduler lock, so that no detached scheduler folds or submits in its place. Baselines from the same run: one bare
``squeue`` and one bare ``sbatch --wrap`` call, so the figures read against what Slurm itself costs
here. Prints figures; not a test.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.stages import Stage

REPO = Path(__file__).resolve().parents[1]
STAGES = {"bench-noop": Stage("bench-noop", "Do nothing", "bench_slurm:noop", ())}


def noop(params: dict, ctx: object) -> None:
    """The job: nothing beyond the runner's own start and finish."""


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    n = parser.parse_args().jobs
    sys.path[:0] = [str(REPO), str(REPO / "bench")]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "bench"), os.environ.get("PYTHONPATH", "")])
    os.environ["RSNA_TUI_EXTRA_STAGES"] = "bench_slurm:STAGES"
    os.environ["RSNA_TUI_MONITOR_INTERVAL"] = "5"
    from rsna_tui.jobs.arrays import submit_array
    from rsna_tui.jobs.manager import JobManager
    from rsna_tui.jobs.slurm import SlurmExecutor
    from rsna_tui.workspace import Workspace
    from tests.app.slurm_cluster import SlurmCluster

    cluster = SlurmCluster.start()
    os.environ.update(cluster.env)
    root = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    try:
        (root / "config.toml").write_text('backend = "slurm"\n[slurm]\npoll_seconds = 0\n')
        manager = JobManager(Workspace(root))
        # hold the scheduler's lock: no detached scheduler folds or submits meanwhile, the figures are ours
        lock = manager.workspace.scheduler_lock.open("a")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        slurm = manager.executors["slurm"]
        assert isinstance(slurm, SlurmExecutor)
        squeue = [_timed(["squeue", "-h"]) for _ in range(5)]
        sbatch = [_timed(["sbatch", "--parsable", "--hold", "--wrap=true", f"--output={root}/wrap.out"]) for _ in range(5)]
        subprocess.run(["scancel", "-u", "root"], check=True)
        print(f"baseline  one bare squeue: {min(squeue) * 1000:.0f} ms; one bare sbatch --wrap: {min(sbatch) * 1000:.0f} ms")

        start = time.perf_counter()
        array = submit_array(manager, "bench-noop", "tiny", [{}] * n, cwd=REPO)
        array_s = time.perf_counter() - start
        print(f"array     {n} jobs in {array_s:.2f} s: {array_s / n * 1000:.1f} ms per job "
              f"({slurm.commands['sbatch']} sbatch call)")
        slurm.commands.clear()
        start = time.perf_counter()
        singles = [manager.submit("bench-noop", cwd=REPO) for _ in range(n)]
        single_s = time.perf_counter() - start
        print(f"single    {n} jobs in {single_s:.2f} s: {single_s / n * 1000:.1f} ms per job "
              f"({slurm.commands['sbatch']} sbatch calls)")
        ids = [j.id for j in array + singles]
        assert all(manager.job(i).native_id for i in ids), "every job was handed to Slurm"

        slurm.commands.clear()
        start = time.perf_counter()
        manager.refresh()
        print(f"refresh   with {len(manager.store.active_jobs())} active jobs: {time.perf_counter() - start:.3f} s, "
              f"Slurm commands: {dict(slurm.commands)}")
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            out = subprocess.run(["squeue", "-h", "-t", "PENDING,RUNNING,COMPLETING", "-o", "%i"],
                                 capture_output=True, text=True).stdout
            if not out.strip():
                break
            time.sleep(2)
        slurm.commands.clear()
        unfolded = len(manager.store.active_jobs())
        start = time.perf_counter()
        manager.refresh()
        fold_s = time.perf_counter() - start
        statuses = [manager.job(i).status for i in ids]
        print(f"fold      {unfolded} ended, unfolded jobs in one refresh: {fold_s:.2f} s "
              f"({fold_s / max(unfolded, 1) * 1000:.1f} ms per job), Slurm commands: {dict(slurm.commands)}; "
              f"{statuses.count('succeeded')} succeeded, {len(ids) - statuses.count('succeeded')} other")
        manager.close()
        lock.close()
    finally:
        cluster.cancel_all()
        cluster.stop()


if __name__ == "__main__":
    main()
