"""What the app's thread workers tell the widgets: data read off the UI thread, as messages."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from rsna_tui.app.poll import JobLine


class JobsChanged(Message):
    """The rows of jobs that changed (all of them when ``full``)."""

    def __init__(self, rows: list[JobLine], ended: list[JobLine], full: bool, seconds: float) -> None:
        super().__init__()
        self.rows = rows
        #: Jobs that reached a terminal status since the previous poll (for toasts and the bell).
        self.ended = ended
        self.full = full
        #: How long the worker's cycle took (fold, liveness, reads), for the footer and the benchmark.
        self.seconds = seconds


class Notice(Message):
    """A toast from a worker thread (posting never blocks, unlike ``call_from_thread``)."""

    def __init__(self, text: str, severity: str = "information", timeout: float | None = None, title: str = "") -> None:
        super().__init__()
        self.text, self.severity, self.timeout, self.title = text, severity, timeout, title


class PollFailed(Message):
    """One poll cycle raised; the app says so and keeps polling."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


@dataclass
class DetailData:
    """What the detail screen's worker read since its previous read (``full`` on the first)."""

    job: Any  # rsna_tui.jobs.store.JobRow
    #: New points per metric: ``{name: [(step, value), ...]}``.
    points: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    #: New resource samples, oldest first (rows of ``resource_samples``).
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: New log text (complete lines).
    log: str = ""
    artefacts: dict[str, str] = field(default_factory=dict)
    #: ``{"attempts": [JobRow], "after": [JobRow], "dependants": [JobRow], "used_by": [(JobRow, why)]}``.
    lineage: dict[str, list[Any]] = field(default_factory=dict)
    full: bool = False
    #: Memory of the largest visible GPU (NVML), for the resource plot; None without a GPU.
    device_total: int | None = None


class DetailLoaded(Message):
    def __init__(self, data: DetailData) -> None:
        super().__init__()
        self.data = data


class GpusSampled(Message):
    """One look at the devices (see :mod:`rsna_tui.app.gpu_sample`)."""

    def __init__(self, sample: Any) -> None:
        super().__init__()
        self.sample = sample
