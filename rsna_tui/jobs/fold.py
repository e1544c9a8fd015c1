"""Folding a job's ``events.jsonl`` into ``jobs.db``, idempotently.

Whoever manages jobs (CLI, TUI, scheduler) calls :func:`fold_job`; several may do so at once.
One fold is one ``BEGIN IMMEDIATE`` transaction that re-reads the job's byte offset under the
write lock, applies the complete lines after it and stores the new offset. So an event is folded
exactly once however many processes fold concurrently, and a crash mid-fold changes nothing.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.labels import LABEL_COLUMNS
from rsna_tui.jobs.events import EVENTS, read_complete
from rsna_tui.jobs.store import TERMINAL, Store

KEY = "SeriesInstanceUID"
FINISH_STATUSES = ("succeeded", "failed", "cancelled")
#: One fold transaction reads at most this much, so that it never holds the write lock for long.
MAX_FOLD_BYTES = 4 * 2**20


@dataclass
class FoldResult:
    events: int = 0
    bad_lines: int = 0
    status: str | None = None


def fold_job(store: Store, job_id: int, job_dir: Path) -> FoldResult:
    """Fold the new complete events of one job; cheap (one stat) when there are none."""
    path = job_dir / EVENTS
    result = FoldResult()
    while True:
        row = store.conn.execute("SELECT events_offset, status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return result
        result.status = row["status"]
        try:
            if path.stat().st_size <= row["events_offset"]:
                return result
        except FileNotFoundError:
            return result
        with store.write() as conn:  # the offset is re-read under the write lock
            row = conn.execute("SELECT events_offset, status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            events, offset, bad = read_complete(path, row["events_offset"], MAX_FOLD_BYTES)
            if offset == row["events_offset"]:
                return result  # only a partial line so far
            status = _apply(conn, job_id, row["status"], events)
            conn.execute("UPDATE jobs SET events_offset = ? WHERE id = ?", (offset, job_id))
            if status in TERMINAL and row["status"] not in TERMINAL:
                _ingest_predictions(conn, job_id)
                if status == "succeeded":
                    _attach_truth(conn, job_id, job_dir)
        result.events += len(events)
        result.bad_lines += bad
        result.status = status


def _apply(conn: Any, job_id: int, status: str, events: list[dict[str, Any]]) -> str:
    metrics, samples = [], []
    job: dict[str, Any] = {}
    for e in events:
        kind, t = e["type"], float(e.get("t", 0.0))
        if kind == "started":
            if status not in TERMINAL:
                status = "running"
            job.update(status=status, started_at=t)
            if e.get("host"):
                job["host"] = e["host"]
        elif kind == "progress":
            total = e.get("total")
            job["progress"] = (float(e["done"]) / float(total)) if total else None
            if e.get("message"):
                job["message"] = str(e["message"])
        elif kind == "metric":
            value = float(e["value"])
            if math.isfinite(value):  # NaN = undefined at this step (e.g. Dice of an empty class): a gap
                metrics.append((job_id, e.get("step"), str(e["name"]), value, t))
        elif kind == "resource":
            samples.append((
                job_id, t, float(e.get("cpu_percent") or 0.0), int(e.get("rss_bytes") or 0),
                e.get("gpu_mem_bytes"), e.get("gpu_util"), e.get("proc_gpu_mem_bytes"),
            ))
        elif kind == "artefact":
            conn.execute(
                "INSERT OR REPLACE INTO artefacts (job_id, name, path, t) VALUES (?, ?, ?, ?)",
                (job_id, str(e["name"]), str(e["path"]), t),
            )
        elif kind == "log":
            job["message"] = str(e.get("message", ""))[:500]
        elif kind == "finished":
            status = e.get("status") if e.get("status") in FINISH_STATUSES else "failed"
            job.update(status=status, finished_at=t, exit_code=e.get("exit_code"), error=e.get("error"))
            if status == "succeeded":
                job["progress"] = 1.0
    if metrics:
        conn.executemany("INSERT INTO metrics (job_id, step, name, value, t) VALUES (?, ?, ?, ?, ?)", metrics)
    if samples:
        conn.executemany(
            "INSERT INTO resource_samples (job_id, t, cpu_percent, rss_bytes, gpu_mem_bytes, gpu_util, "
            "proc_gpu_mem_bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
            samples,
        )
    if job:
        assignments = ", ".join(f"{k} = ?" for k in job)
        conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*job.values(), job_id))
    return status


def _ingest_predictions(conn: Any, job_id: int) -> None:
    """Copy the rows of the job's ``predictions`` artefact (the submission CSV) into ``case_predictions``,
    with each case's seconds and error from its ``cases`` artefact (the per-case table) when there is one."""
    artefacts = dict(conn.execute("SELECT name, path FROM artefacts WHERE job_id = ? AND name IN "
                                  "('predictions', 'cases')", (job_id,)).fetchall())
    if "predictions" not in artefacts:
        return
    try:
        rows = read_predictions(Path(artefacts["predictions"]))
        cases = read_cases(Path(artefacts["cases"])) if "cases" in artefacts else {}
    except (OSError, ValueError) as exc:
        conn.execute("UPDATE jobs SET message = ? WHERE id = ?", (f"predictions not loaded: {exc}", job_id))
        return
    conn.executemany(
        "INSERT OR REPLACE INTO case_predictions (job_id, series_uid, probabilities, aneurysm_present, seconds, "
        "error) VALUES (?, ?, ?, ?, ?, ?)",
        [(job_id, uid, json.dumps(probs), probs[-1], *cases.get(uid, (None, None))) for uid, probs in rows],
    )


def _attach_truth(conn: Any, job_id: int, job_dir: Path) -> None:
    """Fill ``case_predictions.truth`` from a truth CSV, so that review can sort by error.

    Two sources: a job that registered both ``predictions`` and ``truth`` artefacts (its own
    rows), and a scoring job (``evaluate``) whose ``predictions`` / ``truth`` parameters name
    another job's predictions artefact (that job's rows). Relative parameter paths are taken
    from the folder the job was submitted in (``cwd`` of its spec).
    """
    artefacts = dict(conn.execute("SELECT name, path FROM artefacts WHERE job_id = ?", (job_id,)).fetchall())
    targets: list[tuple[int, Path]] = []
    if "predictions" in artefacts and "truth" in artefacts:
        targets.append((job_id, Path(artefacts["truth"])))
    params = json.loads(conn.execute("SELECT params FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
    if isinstance(params.get("predictions"), str) and isinstance(params.get("truth"), str) and params["truth"]:
        try:
            cwd = Path(json.loads((job_dir / "spec.json").read_text()).get("cwd") or ".")
        except (OSError, ValueError):
            cwd = Path(".")
        predictions = str((cwd / params["predictions"]).resolve())
        producers = conn.execute("SELECT job_id FROM artefacts WHERE name = 'predictions' AND path = ?", (predictions,))
        targets.extend((producer, cwd / params["truth"]) for (producer,) in producers.fetchall())
    for target, truth_path in targets:
        try:
            truth = {uid: json.dumps([int(v) for v in labels]) for uid, labels in read_predictions(truth_path)}
        except (OSError, ValueError) as exc:
            conn.execute("UPDATE jobs SET message = ? WHERE id = ?", (f"truth not loaded: {exc}", job_id))
            continue
        conn.executemany(
            "UPDATE case_predictions SET truth = ? WHERE job_id = ? AND series_uid = ?",
            [(labels, target, uid) for uid, labels in truth.items()],
        )


def _records(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV that must have ``columns``; ValueError naming the file otherwise."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in set(reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(missing)}")
        return list(enumerate(reader, start=2))


def read_predictions(path: Path) -> list[tuple[str, list[float]]]:
    """``(series uid, 14 probabilities)`` per row of a predictions (or truth) CSV.

    Raises ValueError naming the file and the missing column or the bad row.
    """
    out = []
    for number, record in _records(path, (KEY, *LABEL_COLUMNS)):
        try:
            out.append((record[KEY], [float(record[c]) for c in LABEL_COLUMNS]))
        except ValueError as exc:
            raise ValueError(f"{path} line {number}: {exc}") from None
    return out


def read_cases(path: Path) -> dict[str, tuple[float | None, str | None]]:
    """Series uid -> ``(seconds, error)`` from a per-case table (``cases.csv``: status, seconds, reason);
    the error is ``"<status>: <reason>"`` for a case whose status is not ``ok``."""
    out: dict[str, tuple[float | None, str | None]] = {}
    for number, record in _records(path, (KEY, "status", "seconds")):
        try:
            seconds = float(record["seconds"]) if record["seconds"] not in (None, "") else None
        except ValueError as exc:
            raise ValueError(f"{path} line {number}: seconds: {exc}") from None
        status = record["status"] or "ok"
        out[record[KEY]] = (seconds, None if status == "ok" else f"{status}: {record.get('reason') or ''}".strip())
    return out
