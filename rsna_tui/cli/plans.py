"""Printing and carrying out a plan: shared by ``run`` and ``pipeline``."""
from __future__ import annotations

import sys
from typing import Sequence

import typer

from rsna_tui.cli.common import State, print_json, print_table
from rsna_tui.cli.follow import follow_jobs
from rsna_tui.jobs.planner import REUSE, RUN, WAIT, Plan, submit_plan


def plan_rows(plan: Plan) -> list[list[str]]:
    rows = []
    for index, step in enumerate(plan.steps):
        what = {REUSE: f"reuse job {step.job_id}", WAIT: f"wait for job {step.job_id}",
                RUN: f"run as job {step.job_id}" if step.job_id else "run"}[step.action]
        after = ",".join(str(u) for u in step.upstream)
        rows.append([str(index), step.stage, what, after, step.fingerprint[:12], step.reason])
    return rows


def print_plan(plan: Plan, to_stderr: bool = False) -> None:
    """The plan as a table (stdout), or one line per step on stderr (beside a job id on stdout)."""
    if to_stderr:
        for row in plan_rows(plan):
            print(f"{row[0]:>2} {row[1]:<12} {row[2]:<20} {row[5]}", file=sys.stderr)
        return
    print_table(f"plan for {plan.target} ({plan.profile})", ["#", "stage", "action", "after", "fingerprint", "why"],
                plan_rows(plan))


def carry_out(state: State, plan: Plan, *, dry_run: bool, as_json: bool, follow: bool,
              after: Sequence[int] = ()) -> None:
    """``--dry-run``: print the plan. Else submit it, print the target's job id (``--json``: the job),
    and with ``--follow`` stream every job the plan runs or waits for; exit 1 when one fails."""
    if dry_run:
        if as_json:
            print_json(plan.to_json())
        else:
            print_plan(plan)
        return
    manager = state.manager(write=True)
    done = submit_plan(manager, plan, after)
    print_plan(done, to_stderr=True)
    target = manager.job(done.target_step.job_id)  # type: ignore[arg-type]
    if as_json and not follow:
        print_json(target.to_json())
        return
    if not as_json:
        typer.echo(target.id)
    if not follow:
        return
    ids = done.job_ids((RUN, WAIT))
    if not ids:
        print(f"up to date: job {target.id} ({target.stage}) is reused, nothing to run", file=sys.stderr)
    ok = follow_jobs(state, ids, to_stderr=as_json) if ids else target.status == "succeeded"
    if as_json:
        print_json(manager.job(target.id).to_json())
    raise typer.Exit(0 if ok else 1)
