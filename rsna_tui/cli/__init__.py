"""``rsna-tui``: the headless command line (one command, one function).

Every command works on one workspace (``--workspace`` / ``RSNA_TUI_WORKSPACE`` / the user data
folder); ``--db FILE`` opens another database read-only (e.g. ``jobs.db.example``). Commands that
read jobs first fold new events and notice vanished processes, so what they print is current.
Output is Rich on a terminal, plain tab-separated text when piped, JSON with ``--json``.

Exit codes: 0 success; 1 a failed job (``--follow``), a request that cannot be done or a database
that cannot be used (damaged, locked, read-only, newer: one line naming the file and what to do,
the file untouched); 2 a bad stage, parameter or option (the message lists the valid ones). The
module imports neither torch nor SQLAlchemy, so commands start fast.
"""
from __future__ import annotations

import sqlite3
import sys
from typing import Iterable

import typer

from engine.stages import ParameterError
from rsna_tui.cli import export, jobs, stages, datasets, review, doctor, report, app_cmds  # noqa: F401, I001  (each registers its commands, in help order)
from rsna_tui.cli.common import app, current_db
from rsna_tui.jobs.config import ConfigError
from rsna_tui.jobs.manager import JobError
from rsna_tui.jobs.slurm import SlurmError
from rsna_tui.jobs.store import StoreError, store_error

INTERRUPTED = 130

__all__ = ["app", "main"]


def main(argv: Iterable[str] | None = None) -> int:
    """Console-script entry point; turns known errors into messages and exit codes."""
    try:
        result = app(args=list(argv) if argv is not None else None, standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (JobError, StoreError, ConfigError, SlurmError, FileNotFoundError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:  # a query outside the Store's own methods (folding, scheduling)
        print(f"error: {store_error(current_db(), exc)}", file=sys.stderr)
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
