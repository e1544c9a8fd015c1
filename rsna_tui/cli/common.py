"""What every command shares: the Typer app, the global options and the output helpers.

Output is Rich on a terminal, plain tab-separated text when piped, JSON with ``--json``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer

from engine.stages import ParameterError
from rsna_tui.jobs.manager import JobError, JobManager
from rsna_tui.jobs.store import JobRow, Store
from rsna_tui.workspace import Workspace

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

    def backend_manager(self, backend: str | None, write: bool = True) -> JobManager:
        """The manager for submitting (``write``) or planning, on ``backend`` (None: the workspace
        default), checked usable before any job exists."""
        manager = self.manager(write=write)
        if backend is not None:
            if backend not in manager.executors:
                raise ParameterError(f"unknown backend {backend!r}; backends: {', '.join(manager.executors)}")
            manager.backend = backend
        check = getattr(manager.executors[manager.backend], "check_workspace", None)
        if check is not None and write:
            check()  # e.g. a Slurm workspace on a node-local path: refused before any job exists
        return manager

    def refreshed(self) -> JobManager:
        """The manager, with active jobs folded and checked (not for a read-only database)."""
        manager = self.manager()
        if not self.readonly:
            manager.refresh()
        return manager


def state_of(ctx: typer.Context) -> State:
    return ctx.obj


#: The database of this command line, for messages about errors raised outside any Store method.
_CURRENT: dict[str, Path] = {}


def current_db() -> Path:
    return _CURRENT.get("db") or Workspace.choose().db_path


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    workspace: Optional[Path] = typer.Option(
        None, "--workspace", "-w", help="Workspace folder (default: $RSNA_TUI_WORKSPACE, else the user data folder)"
    ),
    db: Optional[Path] = typer.Option(None, "--db", help="Open this jobs database read-only (e.g. jobs.db.example)"),
    shared_group: Optional[str] = typer.Option(
        None, "--shared-group", metavar="GROUP",
        help="Share the workspace with GROUP (folders 2770, files 0660; it stays shared). Default: private (0700 / 0600)",
    ),
) -> None:
    """Train and run the two-stage aneurysm detector as background jobs of a workspace.

    Without a command (on a terminal): open the app, a live control room for the jobs.
    """
    if db is not None and workspace is None:
        workspace = db.resolve().parent
    ctx.obj = State(Workspace.choose(workspace), db.resolve() if db else None)
    if shared_group:
        try:
            ctx.obj.workspace.share_with(shared_group)
        except ValueError as exc:
            raise JobError(str(exc)) from None
    ctx.obj.workspace.apply_umask()  # before anything is created: private unless shared
    _CURRENT["db"] = ctx.obj.db or ctx.obj.workspace.db_path
    if ctx.invoked_subcommand is None:
        served = bool(os.environ.get("TEXTUAL_DRIVER"))  # textual-serve runs us on pipes
        if not served and not (sys.stdin.isatty() and sys.stdout.isatty()):
            typer.echo(ctx.get_help())  # no terminal to draw on (piped, cron): the commands instead
            return
        from rsna_tui.app.app import run_app  # Textual is imported only here

        run_app(ctx.obj.workspace, ctx.obj.db)


# -- output helpers ----------------------------------------------------------------------------------

def is_terminal() -> bool:
    return sys.stdout.isatty()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fmt_time(t: float | None) -> str:
    if not t:
        return ""
    recent = time.time() - t < 86400 * 300
    return time.strftime("%m-%d %H:%M" if recent and is_terminal() else "%Y-%m-%d %H:%M:%S", time.localtime(t))


def duration(job: JobRow) -> str:
    if not job.started_at:
        return ""
    seconds = int((job.finished_at or time.time()) - job.started_at)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """A Rich table on a terminal (one line per row, the last column cut to fit), else TSV."""
    if is_terminal():
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


def status_cell(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style and is_terminal() else status


# -- following jobs ------------------------------------------------------------------------------------
