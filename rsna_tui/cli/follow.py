"""Streaming the events of running jobs to the terminal (``run --follow``, ``pipeline --follow``)."""
from __future__ import annotations

import sys
import time
from typing import Any

from rsna_tui.cli.common import State
from rsna_tui.jobs.events import EVENTS, read_complete
from rsna_tui.jobs.store import JobRow

FOLLOW_POLL_S = 0.3


def event_line(job: JobRow, event: dict[str, Any]) -> str | None:
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


def follow_jobs(state: State, job_ids: list[int], to_stderr: bool = False) -> bool:
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
                line = event_line(jobs[job_id], event)
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
