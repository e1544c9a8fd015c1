"""Find the outputs of earlier jobs of a workspace from their job folders alone.

Stages find their inputs by convention (``WorkspaceLayout``) or, for models, as the artefacts of the
latest successful job of another stage (``roi`` uses the latest ``train2d``, ``predict`` the latest
``finetune1`` and ``finetune2``). The job folder is the record the runner writes and the engine may
read: ``spec.json`` (``id``, ``stage``, ``created``, ...) and ``events.jsonl`` (one JSON object per
line with a ``type``; ``artefact`` events carry ``name`` and ``path``; the ``finished`` event
carries ``status``, ``"succeeded"`` on success). The database is the application's business.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.context import WorkspaceLayout


@dataclass(frozen=True)
class JobRecord:
    """What a job folder says about one finished job."""

    id: str
    stage: str
    created: str
    status: str | None
    artefacts: dict[str, str]


def read_job(job_dir: Path) -> JobRecord | None:
    """The record of one job folder, or None when it has no readable ``spec.json``."""
    try:
        spec = json.loads((job_dir / "spec.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    status: str | None = None
    artefacts: dict[str, str] = {}
    events = job_dir / "events.jsonl"
    if events.exists():
        for line in events.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            if event.get("type") == "artefact":
                artefacts[event["name"]] = event["path"]
            elif event.get("type") == "finished":
                status = event.get("status")
    return JobRecord(str(spec.get("id", job_dir.name)), spec.get("stage", ""), str(spec.get("created", "")), status, artefacts)


def latest_artefact(workspace: WorkspaceLayout, stage: str, name: str) -> Path:
    """The artefact ``name`` of the most recent successful job of ``stage``.

    Raises FileNotFoundError naming the stage when the workspace has none, so that the user
    knows which job to run first.
    """
    records = [r for d in workspace.jobs.glob("*") if (r := read_job(d)) is not None]
    done = [r for r in records if r.stage == stage and r.status == "succeeded" and name in r.artefacts]
    if not done:
        raise FileNotFoundError(
            f"no successful '{stage}' job with a '{name}' artefact in {workspace.jobs}; run that stage first"
        )
    return Path(max(done, key=lambda r: (r.created, r.id)).artefacts[name])


def resolve_job_artefact(workspace: WorkspaceLayout, ref: str, name: str) -> Path:
    """A job id (digits: ``jobs/<id>``) or a plain path, turned into the path of artefact ``name``."""
    job_dir = workspace.job_dir(ref)
    if ref.isdigit() and job_dir.is_dir():
        record = read_job(job_dir)
        if record is None or name not in record.artefacts:
            raise FileNotFoundError(f"job {ref} has no '{name}' artefact")
        return Path(record.artefacts[name])
    path = Path(ref).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{ref} is neither a job id of this workspace nor an existing path")
    return path
