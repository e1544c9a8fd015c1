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
from rsna_tui.cli.plans import carry_out
from rsna_tui.jobs.arrays import submit_array
from rsna_tui.jobs.config import BACKENDS
from rsna_tui.jobs.events import LOG
from rsna_tui.jobs.manager import DEFAULT_GRACE_S, JobError, JobManager
from rsna_tui.jobs.pipeline import pipeline_plan
from rsna_tui.jobs.planner import plan
from rsna_tui.jobs.store import STATUSES, JobRow


@app.command()
def run(
    ctx: typer.Context,
    stage: str = typer.Option(..., "--stage", "-s", help="Stage name (see `rsna-tui stages`)"),
    profile: str = typer.Option("tiny", "--profile", "-p", help=f"Parameter profile: {', '.join(PROFILES)}"),
    set_: list[str] = typer.Option([], "--set", help="Override a parameter: key=value, or stage.key=value for an upstream stage (repeatable)"),
    after: list[int] = typer.Option([], "--after", help="Start only after this job succeeded (repeatable)"),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Print the plan (reuse / wait / run, and why); submit nothing"),
    no_deps: bool = typer.Option(False, "--no-deps", help="Submit only this stage, even if an equal job exists (as before the planner); its inputs come from existing jobs or paths"),
    force: bool = typer.Option(False, "--force", help="Run the stage even if an equal job succeeded"),
    rerun: list[str] = typer.Option([], "--rerun", help="Run this upstream stage and everything after it again (repeatable)"),
    array: Optional[str] = typer.Option(
        None, "--array", help="One job per value, submitted together as a Slurm array (no planning: inputs from existing jobs): KEY=V1,V2,... e.g. fold=0,1,2,3,4"
    ),
    backend: Optional[str] = typer.Option(
        None, "--backend", "-b", help=f"Where the job runs: {', '.join(BACKENDS)} (default: config.toml, else local)"
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream progress and logs; exit 0 on success, 1 on failure"),
    as_json: bool = typer.Option(False, "--json", help="Print the job (with --dry-run: the plan) as JSON"),
) -> None:
    """Bring a stage up to date: plan its missing upstream jobs, reuse finished ones, submit the rest."""
    state = state_of(ctx)
    manager = state.backend_manager(backend, write=not dry_run)
    if array and not dry_run:
        _submit_array(state, manager, stage, profile, _array_tasks(array, set_), after, as_json, follow)
        return
    planned = plan(manager, stage, profile, set_, force=force, rerun=rerun, deps=not no_deps)
    carry_out(state, planned, dry_run=dry_run, as_json=as_json, follow=follow, after=after)


def _submit_array(state: Any, manager: JobManager, stage: str, profile: str, tasks: list[list[str]],
                  after: list[int], as_json: bool, follow: bool) -> None:
    """``run --array``: the jobs of one stage as one array; prints their ids (or JSON)."""
    submitted = submit_array(manager, stage, profile, tasks, after)
    if as_json and not follow:
        print_json([j.to_json() for j in submitted])
        return
    if not as_json:
        for job in submitted:
            typer.echo(job.id)
    if follow:
        ok = follow_jobs(state, [j.id for j in submitted], to_stderr=as_json)
        if as_json:
            print_json([manager.job(j.id).to_json() for j in submitted])
        raise typer.Exit(0 if ok else 1)


def _array_tasks(array: str, overrides: list[str]) -> list[list[str]]:
    """``fold=0,1,2`` with the ``--set`` overrides -> one override list per task."""
    key, sep, values = array.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not items:
        raise ParameterError(f"--array {array!r} is not KEY=V1,V2,... (e.g. fold=0,1,2,3,4)")
    return [[*overrides, f"{key.strip()}={value}"] for value in items]


@app.command()
def pipeline(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset name (see `rsna-tui datasets`) or folder; default: the profiles' (demo)"),
    profile: str = typer.Option("tiny", "--profile", "-p", help=f"Parameter profile: {', '.join(PROFILES)}"),
    until: Optional[str] = typer.Option(None, "--until", help="Stop after this stage"),
    set_: list[str] = typer.Option([], "--set", help="Override a parameter: stage.key=value (repeatable)"),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Print the plan; submit nothing"),
    force: bool = typer.Option(False, "--force", help="Run the last stage even if an equal job succeeded"),
    rerun: list[str] = typer.Option([], "--rerun", help="Run this stage and everything after it again (repeatable)"),
    backend: Optional[str] = typer.Option(
        None, "--backend", "-b", help=f"Where the jobs run: {', '.join(BACKENDS)} (default: config.toml, else local)"
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream all steps; exit 0 when all succeeded"),
    as_json: bool = typer.Option(False, "--json", help="Print the last job (with --dry-run: the plan) as JSON"),
) -> None:
    """Train and predict on a dataset: the planner aimed at predict, then evaluate when there is a truth."""
    state = state_of(ctx)
    manager = state.backend_manager(backend, write=not dry_run)
    planned = pipeline_plan(manager, dataset, profile, set_, until, force=force, rerun=rerun)
    carry_out(state, planned, dry_run=dry_run, as_json=as_json, follow=follow)


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
        where = job.backend if job.backend == "local" or not job.native_id else f"{job.backend} {job.native_id}"
        table.append([str(job.id), job.stage, status_cell(job.status), str(job.attempt), where,
                      fmt_time(job.created_at), duration(job), progress, note.splitlines()[0][:80] if note else ""])
    total = manager.store.count_jobs()
    title = f"jobs in {manager.store.path}" + (f" (newest {len(rows)} of {total})" if len(rows) < total and not (status or stage) else "")
    print_table(title, ["id", "stage", "status", "try", "backend", "created", "time", "done", "message"], table)


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
