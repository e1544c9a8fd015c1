"""The job table: one row per job, updated cell by cell, the cursor kept on the same job.

It knows :class:`~rsna_tui.app.poll.JobLine` and nothing of the store. A refresh hands it the
changed lines only; it updates the cells whose text changed (``update_cell``) and adds or
removes rows that start or stop passing the filter. A full rebuild (clear and refill) happens
only when the user changes the filter or the sort order, or a job enters the window.

The table holds a window: the first :data:`WINDOW` jobs in the view's order (newest first by
default), out of every job it knows. Filtering and sorting run over all of them; only the rows
are limited, because a ``DataTable`` row costs about 0.1 ms to add and a workspace may hold
tens of thousands of jobs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from rsna_tui.app.poll import JobLine

STATUS_STYLE = {
    "queued": "dim", "starting": "cyan", "running": "bold cyan", "succeeded": "green", "failed": "bold red",
    "cancelled": "yellow", "lost": "bold magenta",
}
#: The most rows the table holds (the rest is reached by filtering or sorting).
WINDOW = 250
#: (key, header); the order of the columns.
COLUMNS = (
    ("id", "id"), ("stage", "stage"), ("dataset", "data"), ("profile", "prof"), ("status", "status"),
    ("attempt", "try"), ("progress", "done/ETA"), ("elapsed", "time"), ("gpu", "GPU"), ("message", "message"),
)
#: What each sortable column sorts by (``s`` cycles through them).
SORTS: dict[str, Callable[[JobLine], object]] = {
    "id": lambda j: j.id,
    "stage": lambda j: (j.stage, j.id),
    "status": lambda j: (j.status, j.id),
    "elapsed": lambda j: ((j.finished_at or 0) - (j.started_at or 0) if j.started_at else -1, j.id),
    "gpu": lambda j: (j.gpu_mem or 0, j.id),
}


def clock_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def elapsed(job: JobLine, now: float) -> float | None:
    if not job.started_at:
        return None
    return (job.finished_at or now) - job.started_at


def progress_text(job: JobLine, now: float) -> str:
    """``37% 0:12:05`` (done and time left at the rate so far) while a job runs."""
    if job.progress is None or job.terminal:
        return ""
    text = f"{job.progress:.0%}"
    spent = elapsed(job, now)
    if spent and 0 < job.progress < 1:
        text += " " + clock_text(spent * (1 - job.progress) / job.progress)
    return text


def bytes_text(value: int | None) -> str:
    if value is None:
        return ""
    if value >= 2**30:
        return f"{value / 2**30:.1f}G"
    return f"{value / 2**20:.0f}M"


def cells(job: JobLine, now: float, marked: bool) -> tuple[str | Text, ...]:
    spent = elapsed(job, now)
    note = job.error if job.error and job.status != "succeeded" else job.message
    return (
        ("*" if marked else " ") + str(job.id),
        job.stage,
        job.dataset,
        job.profile,
        Text(job.status, style=STATUS_STYLE.get(job.status, "")),
        str(job.attempt),
        progress_text(job, now),
        clock_text(spent) if spent is not None else "",
        bytes_text(job.gpu_mem),
        (note or "").split("\n", 1)[0][:200],
    )


@dataclass
class View:
    """What the table shows: a filter and a sort order."""

    text: str = ""
    statuses: tuple[str, ...] = ()
    stage: str = ""
    sort: str = "id"
    reverse: bool = True
    marked: set[int] = field(default_factory=set)

    def accepts(self, job: JobLine) -> bool:
        if self.statuses and job.status not in self.statuses:
            return False
        if self.stage and job.stage != self.stage:
            return False
        if self.text:
            needle = self.text.lower()
            hay = f"{job.id} {job.stage} {job.dataset} {job.profile} {job.status} {job.message} {job.error or ''}"
            return needle in hay.lower()
        return True


class JobTable(DataTable):
    """The jobs, newest first by default."""

    BINDINGS = [Binding("space", "mark", "Mark", show=False)]

    def __init__(self, clock: Callable[[], float], **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, cell_padding=1, **kwargs)  # type: ignore[arg-type]
        self.clock = clock
        self.view = View()
        self.lines: dict[int, JobLine] = {}
        self._shown: dict[int, tuple[str | Text, ...]] = {}
        #: How many jobs pass the filter (the table shows the first WINDOW of them).
        self.matching = 0

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    # -- what the screen calls ---------------------------------------------------------------------

    @property
    def current_id(self) -> int | None:
        """The job under the cursor."""
        if not self.row_count:
            return None
        try:
            return int(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value or 0) or None
        except Exception:
            return None

    @property
    def shown_ids(self) -> list[int]:
        """The jobs that pass the filter, in table order."""
        return list(self._shown)

    def selected_ids(self) -> list[int]:
        """The marked jobs (Space) that are shown, else the one under the cursor."""
        marked = [i for i in self._shown if i in self.view.marked]
        if marked:
            return sorted(marked)
        current = self.current_id
        return [current] if current is not None else []

    def apply(self, lines: Iterable[JobLine], full: bool = False) -> None:
        """Take changed lines (all lines when ``full``): update, add or remove only those rows."""
        now = self.clock()
        if full:
            self.lines = {line.id: line for line in lines}
            self.rebuild()
            return
        again = False
        order = SORTS[self.view.sort]
        last = self.lines.get(next(reversed(self._shown))) if self._shown else None
        for line in lines:
            before_line = self.lines.get(line.id)
            self.matching += self.view.accepts(line) - (before_line is not None and self.view.accepts(before_line))
            self.lines[line.id] = line
            if line.id in self._shown:
                if self.view.accepts(line):
                    self._put(line, now)
                else:
                    again = True
            elif self.view.accepts(line):
                # a job enters the window when there is room or it sorts before the last shown one
                room = len(self._shown) < WINDOW
                before = last is not None and ((order(line) > order(last)) if self.view.reverse else (order(line) < order(last)))
                again |= room or before
        if again:
            self.rebuild()

    def tick(self) -> None:
        """Advance elapsed time and ETA of the jobs that run (no store read)."""
        now = self.clock()
        for job_id in list(self._shown):
            line = self.lines[job_id]
            if not line.terminal and line.started_at:
                self._put(line, now)

    def rebuild(self) -> None:
        """Clear and refill in the view's order, keeping the cursor on the same job."""
        current = self.current_id
        now = self.clock()
        chosen = [line for line in self.lines.values() if self.view.accepts(line)]
        chosen.sort(key=SORTS[self.view.sort], reverse=self.view.reverse)
        self.matching = len(chosen)
        chosen = chosen[:WINDOW]
        self.clear()
        self._shown = {}
        rows = []
        for line in chosen:
            row = cells(line, now, line.id in self.view.marked)
            self._shown[line.id] = row
            rows.append((row, str(line.id)))
        for row, key in rows:
            self.add_row(*row, key=key)
        self.select(current)

    def select(self, job_id: int | None) -> None:
        if job_id is not None and job_id in self._shown:
            self.move_cursor(row=self.get_row_index(str(job_id)), animate=False)

    def _put(self, line: JobLine, now: float) -> None:
        """Update the cells of a shown row whose text changed."""
        row = cells(line, now, line.id in self.view.marked)
        old = self._shown[line.id]
        for (key, _), before, after in zip(COLUMNS, old, row):
            if before != after:
                self.update_cell(str(line.id), key, after, update_width=True)
        self._shown[line.id] = row

    # -- actions -------------------------------------------------------------------------------------

    def action_mark(self) -> None:
        job_id = self.current_id
        if job_id is None:
            return
        self.view.marked ^= {job_id}
        self._put(self.lines[job_id], self.clock())
        if self.cursor_row < self.row_count - 1:
            self.move_cursor(row=self.cursor_row + 1)
