"""Job commands: run, pipeline, jobs, show, logs, cancel, retry, resume."""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Optional

import typer

from engine.stages import PROFILES, ParameterError
from rsna_tui.cli.common import (
    app, duration, fmt_time, print_json, state_of, status_cell, print_table,
)
from rsna_tui.cli.follow import FOLLOW_POLL_S, follow_jobs
from rsna_tui.jobs.events import LOG
from rsna_tui.jobs.manager import DEFAULT_GRACE_S, JobError, JobManager
from rsna_tui.jobs.stage_table import find_stage
from rsna_tui.jobs.store import STATUSES, JobRow


@app.command()
def run(
    ctx: typer.Context,
    stage: str = typer.Option(..., "--stage", "-s", help="Stage name (see `rsna-tui stages`)"),
    profile: str = typer.Option("tiny", "--profile", "-p", help=f"Parameter profile: {', '.join(PROFILES)}"),
    set_: list[str] = typer.Option([], "--set", help="Override a parameter: key=value (repeatable)"),
    after: list[int] = typer.Option([], "--after", help="Start only after this job succeeded (repeatable)"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream progress and logs; exit 0 on success, 1 on failure"),
    as_json: bool = typer.Option(False, "--json", help="Print the job as JSON"),
) -> None:
    """Submit one stage as a job; prints its id."""
    state = state_of(ctx)
    manager = state.manager(write=True)
    job = manager.submit(stage, profile, set_, after)
    if as_json and not follow:
        print_json(job.to_json())
        return
    if not as_json:
        typer.echo(job.id)
    if follow:
        ok = follow_jobs(state, [job.id], to_stderr=as_json)
        if as_json:
            print_json(manager.job(job.id).to_json())
        raise typer.Exit(0 if ok else 1)


@app.command()
def pipeline(
    ctx: typer.Context,
    profile: str = typer.Option("tiny", "--profile", "-p", help=f"Parameter profile: {', '.join(PROFILES)}"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream all steps; exit 0 when all succeeded"),
    as_json: bool = typer.Option(False, "--json", help="Print the submitted jobs as JSON"),
) -> None:
    """Submit every step of the demo pipeline, each after the previous one."""
    from engine.pipeline import DEMO_PIPELINE

    state = state_of(ctx)
    manager = state.manager(write=True)
    for stage, overrides in DEMO_PIPELINE:  # check every step before submitting any
        find_stage(stage).resolve(profile, overrides)
    jobs: list[JobRow] = []
    for stage, overrides in DEMO_PIPELINE:
        jobs.append(manager.submit(stage, profile, overrides, [jobs[-1].id] if jobs else []))
    if not follow:
        if as_json:
            print_json([j.to_json() for j in jobs])
        else:
            for job in jobs:
                typer.echo(f"{job.id}\t{job.stage}\t{job.status}")
        return
    ok = follow_jobs(state, [j.id for j in jobs], to_stderr=as_json)
    if as_json:
        print_json([manager.job(j.id).to_json() for j in jobs])
    raise typer.Exit(0 if ok else 1)


@app.command()
def jobs(
    ctx: typer.Context,
    status: Optional[str] = typer.Option(None, "--status", help=f"Only this status: {', '.join(STATUSES)}"),
    stage: Optional[str] = typer.Option(None, "--stage", help="Only this stage"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="At most this many, newest first (table: 50, JSON: all)"),
    as_json: bool = typer.Option(False, "--json", help="Print the jobs as a JSON list"),
) -> None:
    """List jobs, newest first."""
    if status is not None and status not in STATUSES:
        raise ParameterError(f"unknown status {status!r}; statuses: {', '.join(STATUSES)}")
    manager = state_of(ctx).refreshed()
    shown = limit if limit is not None else (None if as_json else 50)
    if as_json:
        sys.stdout.write(manager.store.list_jobs_json(status=status, stage=stage, limit=shown or None) + "\n")
        return
    rows = manager.store.list_jobs(status=status, stage=stage, limit=shown or None)
    table = []
    for job in rows:
        progress = f"{job.progress:.0%}" if job.progress is not None and not job.terminal else ""
        note = job.error if job.error and job.status != "succeeded" else (job.message or "")
        table.append([str(job.id), job.stage, status_cell(job.status), str(job.attempt), fmt_time(job.created_at),
                      duration(job), progress, note.splitlines()[0][:80] if note else ""])
    total = manager.store.count_jobs()
    title = f"jobs in {manager.store.path}" + (f" (newest {len(rows)} of {total})" if len(rows) < total and not (status or stage) else "")
    print_table(title, ["id", "stage", "status", "try", "created", "time", "done", "message"], table)


def _details(manager: JobManager, job: JobRow) -> dict[str, Any]:
    data = job.to_json()
    data["job_dir"] = str(manager.job_dir(job))
    data["metrics"] = manager.store.last_metrics(job.id)
    data["artefacts"] = manager.store.artefacts(job.id)
    samples = manager.store.resource_samples(job.id, limit=1)
    data["resources"] = samples[-1] if samples else None
    data["case_predictions"] = manager.store.count_case_predictions(job.id)
    return data


@app.command()
def show(
    ctx: typer.Context,
    job_id: int = typer.Argument(..., metavar="JOB", help="Job id"),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON"),
) -> None:
    """One job: its record, last metric values and artefacts."""
    manager = state_of(ctx).refreshed()
    data = _details(manager, manager.job(job_id))
    if as_json:
        print_json(data)
        return
    for key in ("id", "stage", "profile", "status", "attempt", "parent_id", "depends_on", "created", "started",
                "finished", "exit_code", "backend", "native_id", "host", "gpu_slot", "job_dir", "message", "error"):
        if data.get(key) not in (None, "", []):
            typer.echo(f"{key:10} {data[key]}")
    typer.echo("params     " + json.dumps(data["params"], sort_keys=True))
    for name, metric in data["metrics"].items():
        step = f" (step {metric['step']})" if metric["step"] is not None else ""
        typer.echo(f"metric     {name} = {metric['value']:.6g}{step}")
    for name, path in data["artefacts"].items():
        typer.echo(f"artefact   {name}: {path}")
    if data["case_predictions"]:
        typer.echo(f"cases      {data['case_predictions']} predictions in the database")
    if data["resources"]:
        r = data["resources"]
        gpu = f", GPU {r['gpu_mem_bytes'] / 2**30:.2f} GiB {r['gpu_util']:.0f}%" if r.get("gpu_mem_bytes") is not None else ", no GPU"
        typer.echo(f"resources  CPU {r['cpu_percent']:.0f}%, RSS {r['rss_bytes'] / 2**20:.0f} MiB{gpu}")


@app.command()
def logs(
    ctx: typer.Context,
    job_id: int = typer.Argument(..., metavar="JOB", help="Job id"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends"),
) -> None:
    """Print a job's log (its stdout and stderr)."""
    state = state_of(ctx)
    manager = state.refreshed()
    job = manager.job(job_id)
    path = manager.job_dir(job) / LOG
    offset = 0
    while True:
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            data = b""
            if not follow:
                raise JobError(f"job {job.id} has no log at {path}") from None
        if data:
            offset += len(data)
            sys.stdout.write(data.decode(errors="replace"))
            sys.stdout.flush()
        if not follow or (job.terminal and not data):
            return
        time.sleep(FOLLOW_POLL_S)
        if not state.readonly:
            manager.refresh([job.id])
        job = manager.job(job.id)


@app.command()
def cancel(
    ctx: typer.Context,
    job_id: int = typer.Argument(..., metavar="JOB", help="Job id"),
    grace: float = typer.Option(DEFAULT_GRACE_S, "--grace", help="Seconds between SIGTERM and SIGKILL"),
) -> None:
    """Cancel a job: SIGTERM to its process group, SIGKILL after the grace period."""
    manager = state_of(ctx).manager(write=True)
    job = manager.cancel(job_id, grace)
    typer.echo(f"{job.id}\t{job.status}")


@app.command()
def retry(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="JOB", help="Job id")) -> None:
    """Run an ended job again with the same parameters (a new attempt); prints the new id."""
    job = state_of(ctx).manager(write=True).retry(job_id)
    typer.echo(job.id)


@app.command()
def resume(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="JOB", help="Job id")) -> None:
    """Continue an ended training job from its checkpoint (a new attempt); prints the new id."""
    job = state_of(ctx).manager(write=True).resume(job_id)
    typer.echo(job.id)
