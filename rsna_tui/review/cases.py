"""One ``predict`` job's cases for review: probabilities, truth, fallbacks and where the review files are.

Sources, each for what it holds (so that either side of the ``predictions.csv`` / ``cases.csv`` split
of seconds and error works): the store's ``case_predictions`` (the 14 probabilities, the truth when a
truth CSV was attached, seconds, error), ``predictions.csv`` (probabilities when the store has none
yet), ``cases.csv`` (status, conversion and stage-1 box fallbacks, and seconds / error when it has
those columns), the truth CSV artefact (Modality, and the truth when the store lacks it) and the
job's metrics (``score``, ``auc/<column>``). The per-case review files live in
``<predictions>/<job>/cases/<uid>/`` (``engine.inference.review`` and ``review_extras``).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.labels import LABEL_COLUMNS, LOCATIONS
from rsna_tui.jobs.store import JobRow, Store

KEY = "SeriesInstanceUID"
PRESENT = len(LABEL_COLUMNS) - 1


class ReviewError(RuntimeError):
    """A job that cannot be reviewed (not a predict job, no predictions, unknown case)."""


@dataclass
class Case:
    """One predicted series as the case table shows it."""

    uid: str
    probabilities: list[float]
    truth: list[int] | None = None
    modality: str = ""
    status: str = "ok"
    fallback: str = ""
    box_fallback: str = ""
    seconds: float | None = None
    error: str = ""
    folder: Path | None = None
    slice_gap: str = ""  # predict's note on uneven slice spacing (``cases.csv``), shown, not filtered

    @property
    def short(self) -> str:
        """The end of the UID (the part that differs between series of one site)."""
        return self.uid if len(self.uid) <= 12 else "…" + self.uid[-11:]

    @property
    def present(self) -> float:
        return self.probabilities[PRESENT]

    @property
    def true_present(self) -> int | None:
        return None if self.truth is None else int(self.truth[PRESENT])

    @property
    def abs_error(self) -> float | None:
        """|probability - truth| of Aneurysm Present: the default sort key."""
        return None if self.truth is None else abs(self.present - self.truth[PRESENT])

    @property
    def top_location(self) -> str:
        """The location with the highest probability."""
        scores = self.probabilities[:PRESENT]
        return LOCATIONS[max(range(len(scores)), key=scores.__getitem__)]

    @property
    def true_locations(self) -> list[str]:
        return [] if self.truth is None else [LOCATIONS[i] for i, v in enumerate(self.truth[:PRESENT]) if v]

    @property
    def failed(self) -> bool:
        return self.status != "ok" or bool(self.error)

    @property
    def has_fallback(self) -> bool:
        return bool(self.fallback or self.box_fallback)

    def to_json(self) -> dict[str, Any]:
        return {
            KEY: self.uid, "modality": self.modality, "status": self.status,
            "probabilities": dict(zip(LABEL_COLUMNS, self.probabilities)),
            "truth": dict(zip(LABEL_COLUMNS, self.truth)) if self.truth is not None else None,
            "abs_error": self.abs_error, "top_location": self.top_location, "true_locations": self.true_locations,
            "conversion_fallback": self.fallback, "box_fallback": self.box_fallback,
            "seconds": self.seconds, "error": self.error, "slice_gap": self.slice_gap,
            "folder": str(self.folder) if self.folder else None,
        }


@dataclass
class ReviewJob:
    """A predict job's cases and scores."""

    job: JobRow
    folder: Path
    cases: list[Case]
    score: float | None = None
    aucs: dict[str, float] = field(default_factory=dict)

    @property
    def has_truth(self) -> bool:
        return any(c.truth is not None for c in self.cases)

    def case(self, ref: str) -> Case:
        """A case by full UID or by a unique end of it (what the table shows)."""
        ref = ref.lstrip("…")
        exact = [c for c in self.cases if c.uid == ref]
        found = exact or [c for c in self.cases if c.uid.endswith(ref)]
        if len(found) != 1:
            known = ", ".join(c.short for c in self.cases[:5])
            what = "no case" if not found else f"{len(found)} cases"
            raise ReviewError(f"{what} of job {self.job.id} match {ref!r} (cases: {known}{', ...' if len(self.cases) > 5 else ''})")
        return found[0]

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job.id, "folder": str(self.folder), "score": self.score, "aucs": self.aucs,
                "cases": [c.to_json() for c in self.cases]}


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def predict_job(store: Store, ref: int | str | None) -> JobRow:
    """The predict job ``ref``, or the latest one that has predictions when ``ref`` is None."""
    if ref is None:
        for job in store.list_jobs(stage="predict"):
            if "predictions" in store.artefacts(job.id):
                return job
        raise ReviewError(f"no predict job with predictions in {store.path}; run `rsna-tui run --stage predict`")
    try:
        job = store.get_job(int(ref))
    except ValueError:
        raise ReviewError(f"{ref!r} is not a job id (job ids are numbers, see `rsna-tui jobs`)") from None
    if job is None:
        raise ReviewError(f"no job {ref} in {store.path}")
    if job.stage != "predict":
        raise ReviewError(f"job {job.id} is a {job.stage} job; review needs a predict job")
    return job


def load_review(store: Store, ref: int | str | None = None) -> ReviewJob:
    """Everything the case table needs about one predict job (see the module docstring)."""
    job = predict_job(store, ref)
    artefacts = store.artefacts(job.id)
    if "predictions" not in artefacts:
        raise ReviewError(f"job {job.id} ({job.status}) registered no predictions.csv yet")
    predictions = Path(artefacts["predictions"])
    folder = predictions.parent
    stored = {row["series_uid"]: row for row in store.case_predictions(job.id)}
    from_csv = {row[KEY]: row for row in _read_csv(predictions)}
    if not stored and not from_csv:
        raise ReviewError(f"job {job.id}: {predictions} has no rows and the store has no case predictions")
    lines = {row[KEY]: row for row in _read_csv(folder / "cases.csv")}
    truth_rows = {row[KEY]: row for row in _read_csv(Path(artefacts["truth"]))} if "truth" in artefacts else {}
    cases = []
    for uid in sorted(set(stored) | set(from_csv)):
        db, row, line, truth_row = stored.get(uid, {}), from_csv.get(uid, {}), lines.get(uid, {}), truth_rows.get(uid)
        probabilities = db.get("probabilities") or [float(row[c]) for c in LABEL_COLUMNS]
        truth = db.get("truth")
        if truth is None and truth_row is not None and all(c in truth_row for c in LABEL_COLUMNS):
            truth = [int(float(truth_row[c])) for c in LABEL_COLUMNS]
        seconds = _float(db.get("seconds"))
        if seconds is None:
            seconds = _float(line.get("seconds", row.get("seconds")))
        error = db.get("error") or line.get("error") or row.get("error") or ""
        status = line.get("status") or ("ok" if not error else error.split(":")[0])
        if status != "ok" and not error:
            error = f"{status}: {line.get('reason', '')}".strip()
        case_folder = folder / "cases" / uid
        cases.append(Case(uid, [float(p) for p in probabilities], truth, (truth_row or {}).get("Modality", ""),
                          status, line.get("fallback", ""), line.get("box_fallback", ""), seconds, error,
                          case_folder if case_folder.is_dir() else None, line.get("slice_gap", "")))
    metrics = store.last_metrics(job.id)
    aucs = {name[len("auc/"):]: m["value"] for name, m in metrics.items() if name.startswith("auc/")}
    aucs = {c: aucs[c] for c in LABEL_COLUMNS if c in aucs}
    score = metrics.get("score", {}).get("value")
    return ReviewJob(job, folder, cases, score, aucs)


__all__ = ["Case", "ReviewError", "ReviewJob", "load_review", "predict_job"]
