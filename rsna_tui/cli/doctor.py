"""``rsna-tui doctor``: check the workspace; ``--repair`` fixes what is safe (see jobs/doctor.py)."""
from __future__ import annotations

import typer

from rsna_tui.cli.common import app, print_json, state_of
from rsna_tui.jobs.manager import JobError

MARK = {"ok": "ok     ", "warning": "warning", "problem": "PROBLEM"}


@app.command()
def doctor(
    ctx: typer.Context,
    repair: bool = typer.Option(False, "--repair", help="Repair what is safe: rebuild a damaged database from the "
                                "job folders (the damaged file is kept), restart the queue, kill leftover processes"),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON"),
) -> None:
    """Check the workspace: database, job folders, launches, scheduler, leftover processes, permissions, disk.

    Exit code 0 when no problem is left, 1 otherwise. Without --repair nothing is changed.
    """
    from rsna_tui.jobs.doctor import examine

    state = state_of(ctx)
    if state.readonly:
        raise JobError("doctor checks a workspace: use --workspace (the --db file's folder is not one)")
    findings = examine(state.workspace, repair=repair)
    left = [f for f in findings if f.level == "problem" and not f.repaired]
    if as_json:
        print_json([f.to_json() for f in findings])
    else:
        typer.echo(f"workspace {state.workspace.root}")
        for f in findings:
            typer.echo(f"{MARK[f.level]}  {f.check:11}  {f.message}")
            if f.repair:
                typer.echo(f"{'':22}{'repaired: ' if f.repaired else ('--repair would: ' if not repair else 'to do: ')}{f.repair}")
        if left and not repair and any(f.repair for f in left):
            typer.echo("run `rsna-tui doctor --repair` to repair what can be")
    raise typer.Exit(1 if left else 0)
