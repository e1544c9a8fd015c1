"""The reporter: the one seam between an engine stage and whoever runs it.

The job runner's reporter appends events to ``events.jsonl``; tests use :class:`ListReporter`;
interactive library use can take :class:`PrintReporter`. Stages call only these four methods.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Reporter(Protocol):
    """What a stage may tell the outside world while it runs."""

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report ``done`` of ``total`` units of work (``total`` None: unknown)."""

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        """Report one scalar, e.g. ``train_loss`` at epoch ``step``."""

    def artefact(self, name: str, path: Path | str) -> None:
        """Register an output file or folder under a stable name (``conversion_table``, ``model``)."""

    def log(self, message: str) -> None:
        """A line for the human reading the job log."""


class ListReporter:
    """Collects events as dictionaries; for tests and for library callers who inspect them later."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        self.events.append({"type": "progress", "done": done, "total": total, "message": message})

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self.events.append({"type": "metric", "name": name, "value": float(value), "step": step})

    def artefact(self, name: str, path: Path | str) -> None:
        self.events.append({"type": "artefact", "name": name, "path": str(path)})

    def log(self, message: str) -> None:
        self.events.append({"type": "log", "message": message})

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def artefacts(self) -> dict[str, str]:
        return {e["name"]: e["path"] for e in self.of_type("artefact")}

    def metrics(self, name: str) -> list[float]:
        return [e["value"] for e in self.of_type("metric") if e["name"] == name]


class PrintReporter(ListReporter):
    """A :class:`ListReporter` that also prints logs and metrics; handy in notebooks."""

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        super().metric(name, value, step)
        print(f"{name} = {value:.6g}" + (f" (step {step})" if step is not None else ""))

    def log(self, message: str) -> None:
        super().log(message)
        print(message)
