"""``rsna-tui``: the headless command line (one command, one function).

Every command works on one workspace (``--workspace`` / ``RSNA_TUI_WORKSPACE`` / the user data
folder); ``--db FILE`` opens another database read-only (e.g. ``jobs.db.example``). Commands that
read jobs first fold new events and notice vanished processes, so what they print is current.
Output is Rich on a terminal, plain tab-separated text when piped, JSON with ``--json``.

Exit codes: 0 success; 1 a failed job (``--follow``) or a request that cannot be done; 2 a bad
stage, parameter or option (the message lists the valid ones). The module imports neither torch
nor SQLAlchemy, so commands start fast.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import typer

from engine.stages import PROFILES, ParameterError
from rsna_tui.jobs.events import EVENTS, LOG, read_complete
from rsna_tui.jobs.manager import DEFAULT_GRACE_S, JobError, JobManager
from rsna_tui.jobs.stage_table import all_stages, find_stage
from rsna_tui.jobs.store import STATUSES, JobRow, SchemaError, Store
from rsna_tui.workspace import Workspace

FOLLOW_POLL_S = 0.3
INTERRUPTED = 130

app = typer.Typer(
    help="Train and run the two-stage aneurysm detector as background jobs of a workspace.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class State:
    """The global options, and the manager opened on first use."""

    workspace: Workspace
    db: Optional[Path] = None
    _manager: Optional[JobManager] = field(default=None, repr=False)

    @property
    def readonly(self) -> bool:
        return self.db is not None

    def manager(self, write: bool = False) -> JobManager:
        if write and self.readonly:
            raise JobError("--db opens a database read-only; use --workspace to run or change jobs")
        if self._manager is None:
            if self.readonly:
                store = Store(self.db, readonly=True)
            else:
                self.workspace.ensure_root()
                store = Store(self.workspace.db_path)
            self._manager = JobManager(self.workspace, store)
        return self._manager

    def refreshed(self) -> JobManager:
        """The manager, with active jobs folded and checked (not for a read-only database)."""
        manager = self.manager()
        if not self.readonly:
            manager.refresh()
        return manager


def _state(ctx: typer.Context) -> State:
    return ctx.obj


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    workspace: Optional[Path] = typer.Option(
        None, "--workspace", "-w", help="Workspace folder (default: $RSNA_TUI_WORKSPACE, else the user data folder)"
    ),
    db: Optional[Path] = typer.Option(None, "--db", help="Open this jobs database read-only (e.g. jobs.db.example)"),
) -> None:
    """Train and run the two-stage aneurysm detector as background jobs of a workspace."""
    if db is not None and workspace is None:
        workspace = db.resolve().parent
    ctx.obj = State(Workspace.choose(workspace), db.resolve() if db else None)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())  # the TUI will open here (a later issue)


# -- output helpers ----------------------------------------------------------------------------------

def _is_terminal() -> bool:
    return sys.stdout.isatty()


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _fmt_time(t: float | None) -> str:
    if not t:
        return ""
    recent = time.time() - t < 86400 * 300
    return time.strftime("%m-%d %H:%M" if recent and _is_terminal() else "%Y-%m-%d %H:%M:%S", time.localtime(t))


def _duration(job: JobRow) -> str:
    if not job.started_at:
        return ""
    seconds = int((job.finished_at or time.time()) - job.started_at)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """A Rich table on a terminal (one line per row, the last column cut to fit), else TSV."""
    if _is_terminal():
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        console = Console()
        widths = [max([len(h)] + [Text.from_markup(r[i]).cell_len for r in rows]) for i, h in enumerate(headers)]
        room = max(10, console.width - sum(widths[:-1]) - 2 * len(headers))
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
        for header, width in zip(headers[:-1], widths):
            table.add_column(header, no_wrap=True, min_width=width)
        table.add_column(headers[-1], no_wrap=True)
        for row in rows:
            last = row[-1] if Text.from_markup(row[-1]).cell_len <= room else row[-1][: room - 1] + "…"
            table.add_row(*row[:-1], last)
        console.print(table)
    else:
        typer.echo("\t".join(headers))
        for row in rows:
            typer.echo("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row))


STATUS_STYLE = {"succeeded": "green", "failed": "red", "lost": "magenta", "cancelled": "yellow", "running": "cyan"}


def _status_cell(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style and _is_terminal() else status


# -- following jobs ------------------------------------------------------------------------------------

def _event_line(job: JobRow, event: dict[str, Any]) -> str | None:
    kind = event["type"]
    prefix = f"[{job.id} {job.stage}]"
    if kind == "started":
        return f"{prefix} started (pid {event.get('pid')} on {event.get('host')})"
    if kind == "progress":
        total = event.get("total")
        amount = f"{event['done']:g}/{total:g}" if total else f"{event['done']:g}"
        return f"{prefix} {amount} {event.get('message') or ''}".rstrip()
    if kind == "log":
        return f"{prefix} {event.get('message', '')}"
    if kind == "metric":
        step = event.get("step")
        return f"{prefix} {event['name']} = {event['value']:.6g}" + (f" (step {step})" if step is not None else "")
    if kind == "artefact":
        return f"{prefix} artefact {event['name']}: {event['path']}"
    return None  # resource samples and finished (the final status line covers it)


def _follow(state: State, job_ids: list[int], to_stderr: bool = False) -> bool:
    """Stream the jobs' events until all have ended; True when all succeeded."""
    manager = state.manager()
    offsets = {job_id: 0 for job_id in job_ids}
    out = sys.stderr if to_stderr else sys.stdout
    announced: set[int] = set()
    while True:
        manager.refresh()
        manager.schedule()
        jobs = {job_id: manager.job(job_id) for job_id in job_ids}
        for job_id in job_ids:
            events, offsets[job_id], _ = read_complete(manager.job_dir(job_id) / EVENTS, offsets[job_id])
            for event in events:
                line = _event_line(jobs[job_id], event)
                if line:
                    print(line, file=out, flush=True)
            job = jobs[job_id]
            if job.terminal and job_id not in announced:
                announced.add(job_id)
                detail = f": {job.error}" if job.error and job.status != "succeeded" else ""
                print(f"[{job.id} {job.stage}] {job.status}{detail}", file=out, flush=True)
        if len(announced) == len(job_ids):
            return all(jobs[j].status == "succeeded" for j in job_ids)
        time.sleep(FOLLOW_POLL_S)


# -- commands ------------------------------------------------------------------------------------------

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
    state = _state(ctx)
    manager = state.manager(write=True)
    job = manager.submit(stage, profile, set_, after)
    if as_json and not follow:
        _print_json(job.to_json())
        return
    if not as_json:
        typer.echo(job.id)
    if follow:
        ok = _follow(state, [job.id], to_stderr=as_json)
        if as_json:
            _print_json(manager.job(job.id).to_json())
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

    state = _state(ctx)
    manager = state.manager(write=True)
    for stage, overrides in DEMO_PIPELINE:  # check every step before submitting any
        find_stage(stage).resolve(profile, overrides)
    jobs: list[JobRow] = []
    for stage, overrides in DEMO_PIPELINE:
        jobs.append(manager.submit(stage, profile, overrides, [jobs[-1].id] if jobs else []))
    if not follow:
        if as_json:
            _print_json([j.to_json() for j in jobs])
        else:
            for job in jobs:
                typer.echo(f"{job.id}\t{job.stage}\t{job.status}")
        return
    ok = _follow(state, [j.id for j in jobs], to_stderr=as_json)
    if as_json:
        _print_json([manager.job(j.id).to_json() for j in jobs])
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
    manager = _state(ctx).refreshed()
    shown = limit if limit is not None else (None if as_json else 50)
    if as_json:
        sys.stdout.write(manager.store.list_jobs_json(status=status, stage=stage, limit=shown or None) + "\n")
        return
    rows = manager.store.list_jobs(status=status, stage=stage, limit=shown or None)
    table = []
    for job in rows:
        progress = f"{job.progress:.0%}" if job.progress is not None and not job.terminal else ""
        note = job.error if job.error and job.status != "succeeded" else (job.message or "")
        table.append([str(job.id), job.stage, _status_cell(job.status), str(job.attempt), _fmt_time(job.created_at),
                      _duration(job), progress, note.splitlines()[0][:80] if note else ""])
    total = manager.store.count_jobs()
    title = f"jobs in {manager.store.path}" + (f" (newest {len(rows)} of {total})" if len(rows) < total and not (status or stage) else "")
    _table(title, ["id", "stage", "status", "try", "created", "time", "done", "message"], table)


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
    manager = _state(ctx).refreshed()
    data = _details(manager, manager.job(job_id))
    if as_json:
        _print_json(data)
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
    state = _state(ctx)
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
    manager = _state(ctx).manager(write=True)
    job = manager.cancel(job_id, grace)
    typer.echo(f"{job.id}\t{job.status}")


@app.command()
def retry(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="JOB", help="Job id")) -> None:
    """Run an ended job again with the same parameters (a new attempt); prints the new id."""
    job = _state(ctx).manager(write=True).retry(job_id)
    typer.echo(job.id)


@app.command()
def resume(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="JOB", help="Job id")) -> None:
    """Continue an ended training job from its checkpoint (a new attempt); prints the new id."""
    job = _state(ctx).manager(write=True).resume(job_id)
    typer.echo(job.id)


def _stage_info(name: str) -> dict[str, Any]:
    stage = all_stages()[name]
    defaults: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for profile in PROFILES:
        try:
            defaults[profile] = stage.defaults(profile)
        except ParameterError as exc:
            errors[profile] = str(exc)
    return {
        "name": stage.name, "help": stage.help, "gpu": stage.gpu, "resumable": stage.resumable,
        "params": [
            {"name": p.name, "kind": p.kind, "help": p.help, "choices": list(p.choices),
             "defaults": {profile: values.get(p.name) for profile, values in defaults.items()}}
            for p in stage.params
        ],
        **({"profile_errors": errors} if errors else {}),
    }


@app.command()
def stages(as_json: bool = typer.Option(False, "--json", help="Print as JSON")) -> None:
    """The stages, their parameters and the defaults of each profile."""
    infos = [_stage_info(name) for name in all_stages()]
    if as_json:
        _print_json(infos)
        return
    for info in infos:
        flags = ", ".join(f for f, on in (("GPU", info["gpu"]), ("resumable", info["resumable"])) if on)
        typer.echo(f"{info['name']}: {info['help']}" + (f" [{flags}]" if flags else ""))
        for p in info["params"]:
            values = "  ".join(f"{profile}={json.dumps(v)}" for profile, v in p["defaults"].items())
            choices = f" (one of {', '.join(map(str, p['choices']))})" if p["choices"] else ""
            typer.echo(f"    {p['name']} ({p['kind']}): {p['help']}{choices}\n        {values}")


def main(argv: Iterable[str] | None = None) -> int:
    """Console-script entry point; turns known errors into messages and exit codes."""
    try:
        result = app(args=list(argv) if argv is not None else None, standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (JobError, SchemaError, FileNotFoundError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # click's usage errors and aborts
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        raise
    if result == INTERRUPTED:  # typer's answer to Ctrl-C, e.g. while following
        print("interrupted; jobs keep running in the background (see `rsna-tui jobs`)", file=sys.stderr)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
