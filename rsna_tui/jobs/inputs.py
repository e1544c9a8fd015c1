"""References from a job's parameters to an upstream job's artefact: ``job:<id>/<artefact>``.

The planner knows the artefact path of a job that already succeeded and writes that path into the
dependant's parameters. A job submitted in the same plan has no outputs yet, so the dependant gets a
reference instead, and its runner turns it into the path when it starts (the upstream job has
succeeded by then: the dependant runs ``--after`` it). The runner reads the upstream job's own
record, ``events.jsonl`` in its folder, so this works on any backend with a shared file system;
the engine only ever sees paths.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rsna_tui.jobs.events import EVENTS, read_complete

_REF = re.compile(r"^job:(\d+)/([\w.-]+)$")


def job_ref(job_id: int, artefact: str) -> str:
    return f"job:{job_id}/{artefact}"


def parse_ref(text: str) -> tuple[int, str] | None:
    """``(job id, artefact)`` of a reference, None for anything else (a path, a stage name)."""
    match = _REF.match(text.strip())
    return (int(match.group(1)), match.group(2)) if match else None


def folder_artefacts(job_dir: Path) -> dict[str, str]:
    """The artefacts a job registered, from its ``events.jsonl``."""
    events, _, _ = read_complete(job_dir / EVENTS, 0)
    return {e["name"]: e["path"] for e in events if e.get("type") == "artefact"}


def resolve_refs(params: dict[str, Any], jobs_root: Path) -> tuple[dict[str, Any], list[str]]:
    """The parameters with every reference replaced by its path, and one log line per replacement."""
    resolved, notes = dict(params), []
    for key, value in params.items():
        if not isinstance(value, str) or "job:" not in value:
            continue
        parts = []
        for part in (p.strip() for p in value.split(",")):
            ref = parse_ref(part)
            if ref is None:
                parts.append(part)
                continue
            job_id, name = ref
            artefacts = folder_artefacts(jobs_root / str(job_id))
            if name not in artefacts:
                found = ", ".join(sorted(artefacts)) or "none"
                raise FileNotFoundError(f"{key}: upstream job {job_id} registered no '{name}' artefact "
                                        f"(it has: {found}); see `rsna-tui show {job_id}`")
            parts.append(artefacts[name])
            notes.append(f"input {key}: {artefacts[name]} (job {job_id}'s {name})")
        resolved[key] = ",".join(parts)
    return resolved, notes
