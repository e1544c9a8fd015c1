"""Job manager edge states and races, with real CLI processes and real job processes.

Several ``rsna-tui run`` processes racing for one GPU slot; a job whose process never got recorded
or already went; retry / resume of a running job; cancel of a finished job; a bad status filter.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

from rsna_tui.jobs.manager import JobManager
from tests.app.conftest import REPO, events_of, wait_for

RACERS = 4


def test_cli_processes_racing_for_one_gpu_slot_take_it_in_turn(job_env: dict, manager: JobManager) -> None:
    """Four CLIs submit a GPU job at the same moment (two of them follow theirs, so they schedule too):
    every job runs, each alone on slot 0, and none is left queued."""
    commands = [[sys.executable, "-m", "rsna_tui", "run", "--stage", "test-gpu-sleep", "--set", "seconds=0.6",
                 "--set", "steps=1", "--force", *(["--follow"] if i % 2 else [])] for i in range(RACERS)]
    racers = [subprocess.Popen(c, cwd=REPO, env=job_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for c in commands]
    outputs = [r.communicate(timeout=120) for r in racers]
    assert [r.returncode for r in racers] == [0] * RACERS, outputs
    ids = [int(out.split()[0]) for out, _ in outputs]
    assert len(set(ids)) == RACERS
    done = [wait_for(manager, job_id, lambda j: j.terminal, timeout=60) for job_id in ids]
    assert [j.status for j in done] == ["succeeded"] * RACERS, [(j.id, j.status, j.error) for j in done]
    assert {j.gpu_slot for j in done} == {0}
    for a, b in combinations(sorted(done, key=lambda j: j.started_at), 2):
        assert a.finished_at <= b.started_at, f"jobs {a.id} and {b.id} held GPU slot 0 at the same time"
    assert manager.store.list_jobs(status="queued") == [] and manager.store.list_jobs(status="starting") == []


def test_a_running_job_without_a_recorded_process_becomes_lost(manager: JobManager) -> None:
    """Its runner reported ``started`` but its pid never reached the database, and no runner holds its
    folder any more: lost with the reason, not running for ever. (A ``starting`` job whose launcher died
    before starting a runner is queued again: ``test_hardening_processes``.)"""
    job = manager.submit("test-sleep", start=False, cwd=REPO)
    now = time.time()
    manager.store.update_job(job.id, status="running", started_at=now - 1)
    manager.refresh()
    lost = manager.job(job.id)
    assert lost.status == "lost" and "ended without a finished event" in lost.error and lost.finished_at >= now


def test_a_starting_job_whose_process_is_gone_becomes_lost(manager: JobManager) -> None:
    """Launched, then gone before its runner wrote a single event."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    job = manager.submit("test-sleep", start=False, cwd=REPO)
    manager.store.update_job(job.id, status="starting", started_at=time.time(), native_id=str(gone.pid),
                             host=manager.executors["local"].host, proc_create_time=time.time() - 5)
    manager.refresh()
    lost = manager.job(job.id)
    assert lost.status == "lost" and f"process {gone.pid}" in lost.error and "log is empty" in lost.error


def test_retry_or_resume_of_a_running_job_is_refused(cli, manager: JobManager) -> None:
    running = manager.submit("test-gpu-sleep", overrides=["seconds=30"], cwd=REPO)
    wait_for(manager, running.id, lambda j: j.status == "running", timeout=15)
    for command in ("retry", "resume"):
        refused = cli(command, str(running.id), check=False)
        assert refused.returncode == 1, (command, refused.stdout, refused.stderr)
        assert f"job {running.id} is running; cancel it first" in refused.stderr
    assert [j.id for j in manager.store.list_jobs()] == [running.id], "a refused retry left a job behind"
    assert manager.job(running.id).status == "running"


def test_cancel_of_a_finished_job_changes_nothing(cli, manager: JobManager, workspace: Path) -> None:
    job = manager.submit("test-sleep", overrides=["seconds=0.1"], cwd=REPO)
    before = wait_for(manager, job.id, lambda j: j.terminal)
    assert before.status == "succeeded"
    events = events_of(workspace, job.id)
    result = cli("cancel", str(job.id), "--grace", "1")
    assert result.stdout.split() == [str(job.id), "succeeded"]
    after = manager.job(job.id)
    assert (after.status, after.finished_at, after.exit_code, after.error) == \
        (before.status, before.finished_at, before.exit_code, before.error)
    assert events_of(workspace, job.id) == events


def test_jobs_with_an_unknown_status_exits_2_listing_the_statuses(cli) -> None:
    result = cli("jobs", "--status", "bogus", check=False)
    assert result.returncode == 2 and "unknown status 'bogus'" in result.stderr
    assert "queued" in result.stderr and "succeeded" in result.stderr and "lost" in result.stderr
    assert json.loads(cli("jobs", "--json", "--status", "lost").stdout) == []


def test_forked_pool_workers_of_a_job_die_by_sigterm_and_the_job_ends(manager: JobManager, workspace: Path) -> None:
    """A pool's exit SIGTERMs its forked workers. They must die of it, not run the runner's cancel
    handler (inherited through fork): that raised ``Cancelled`` inside the workers, left a queue lock
    held and, now and then, hung the job for ever in nnU-Net's fingerprint step."""
    job = manager.submit("test-sleep", function="tests.app.fork_pool_stage:run", cwd=REPO)
    done = wait_for(manager, job.id, lambda j: j.terminal, timeout=60)
    log = (workspace / "jobs" / str(job.id) / "log.txt").read_text()
    assert done.status == "succeeded", (done.error, log[-2000:])
    assert "four forked pools done" in log and "Cancelled" not in log and "Traceback" not in log, log[-2000:]
