"""Job detail: curves, resources, log tail, parameters, lineage and artefacts of one job, live."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from rsna_tui.app.actions import JobActions
from rsna_tui.app.gpu_sample import sample_machine
from rsna_tui.app.messages import DetailData, DetailLoaded, Notice
from rsna_tui.app.poll import DetailReader
from rsna_tui.app.widgets.curves import CurvePanel
from rsna_tui.app.widgets.job_table import STATUS_STYLE, clock_text
from rsna_tui.app.widgets.log_tail import LogTail
from rsna_tui.app.widgets.resources import ResourcePanel
from rsna_tui.jobs.events import LOG
from rsna_tui.jobs.stage_table import all_stages
from rsna_tui.jobs.store import JobRow

TAB_KEYS = Binding.Group("tabs", compact=True)
TABS = ("curves", "resources", "log", "params", "lineage", "artefacts")
TABLE_COLUMNS = {
    "params": ("parameter", "value", "type", "help"),
    "lineage": ("relation", "job", "stage", "status", "try", "note"),
    "artefacts": ("name", "path"),
}
READ_INTERVAL_S = 1.0
#: Once the job ended and nothing new came, look this rarely (a retry may still appear in lineage).
IDLE_INTERVAL_S = 5.0


def describe(job: JobRow, now: float) -> str:
    """The one-line header of a job."""
    style = STATUS_STYLE.get(job.status, "")
    spent = ((job.finished_at or now) - job.started_at) if job.started_at else None
    where = f"{job.backend} id {job.native_id or '-'}" + (f" on {job.host}" if job.host else "")
    parts = [
        f"[b]job {job.id}[/b] {job.stage}", f"[{style}]{job.status}[/]" if style else job.status,
        f"try {job.attempt}", job.profile, where,
    ]
    if spent is not None:
        parts.append(clock_text(spent))
    if job.progress is not None and not job.terminal:
        parts.append(f"{job.progress:.0%}")
    head = " | ".join(parts)
    note = job.error if job.error and job.status != "succeeded" else job.message
    return head + ("\n" + note.splitlines()[0][:300] if note else "")


def _device_total(sampler: Any) -> int | None:
    """Memory of the largest visible GPU, for the resource plot's axis; None without one."""
    try:
        return max((d.mem_total for d in sampler().devices), default=None)
    except Exception:
        return None


class JobDetailScreen(JobActions, Screen):
    AUTO_FOCUS = ""
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("left_square_bracket", "tab(-1)", "Previous tab", group=TAB_KEYS),
        Binding("right_square_bracket", "tab(1)", "Next tab", group=TAB_KEYS),
        Binding("c", "cancel", "Cancel"),
        Binding("r", "retry", "Retry"),
        Binding("R", "resume", "Resume", show=False),
        Binding("o", "pager", "Pager"),
        Binding("Y", "copy_path", "Copy path", show=False),
    ]

    def __init__(self, job_id: int, tab: str = "curves") -> None:
        super().__init__()
        self.job_id = job_id
        self.first_tab = tab
        self.job: JobRow | None = None
        self.loads = 0
        self._stop = threading.Event()
        #: Everything read so far, kept so that a tab's panel can be filled when first shown.
        self.points: dict[str, list[tuple[float | None, float, float]]] = {}
        self.samples: list[dict[str, Any]] = []
        self.log_text: list[str] = []
        self.artefacts: dict[str, str] = {}
        self.lineage: dict[str, list[Any]] = {}
        self.device_total: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"job {self.job_id}: loading", id="detail-head")
        with TabbedContent(initial=self.first_tab, id="detail-tabs"):
            for tab in TABS:  # empty until first shown: mounting all six panels costs more than reading
                yield TabPane(tab.capitalize(), id=tab)
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        await self._show(self.first_tab)
        self.read()

    async def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        await self._show(str(event.pane.id))

    def panel(self, tab: str) -> Any:
        """The panel of a tab, or None while that tab was never shown."""
        found = self.query(f"#{tab}-body")
        return found.first() if found else None

    async def _show(self, tab: str) -> None:
        """Mount the tab's panel on first view and give it everything read so far."""
        if self.panel(tab) is not None:
            return
        widget: Any
        if tab == "curves":
            widget = CurvePanel(id="curves-body")
        elif tab == "resources":
            widget = ResourcePanel(self.device_total, id="resources-body")
        elif tab == "log":
            widget = LogTail(id="log-body")
        else:
            widget = DataTable(id=f"{tab}-body", cursor_type="row")
        await self.query_one(f"TabPane#{tab}", TabPane).mount(widget)
        if tab == "curves":
            widget.add_points(self.points)
            widget.picker.focus()  # its keys (e, y, x, space) work at once
        elif tab == "resources":
            widget.add_samples(self.samples)
        elif tab == "log":
            widget.add_text("".join(self.log_text))
        else:
            widget.add_columns(*TABLE_COLUMNS[tab])
            self._fill_table(tab)

    def on_unmount(self) -> None:
        self._stop.set()

    def selected_job_ids(self) -> list[int]:
        return [self.job_id]

    @work(thread=True, exclusive=True, exit_on_error=False, group="detail")
    def read(self) -> None:
        """Read what is new, post it, wait; until the screen goes away."""
        worker = get_current_worker()
        app = self.app
        reader = DetailReader(app.workspace, app.db_path, app.readonly, self.job_id)
        try:
            quiet = 0
            while not worker.is_cancelled and app.keeps_running():
                try:
                    data = reader.read()
                except Exception as exc:
                    app.post_message(Notice(f"job {self.job_id}: {exc}", "error"))
                    return
                if data.full:  # the plot's device total after the first read: NVML's start is slow
                    self.post_message(DetailLoaded(data))
                    device_total = _device_total(app.gpu_sampler or sample_machine)
                    if device_total:
                        self.post_message(DetailLoaded(DetailData(job=data.job, device_total=device_total)))
                    quiet = 0
                else:
                    fresh = data.points or data.samples or data.log or data.lineage
                    if fresh:
                        self.post_message(DetailLoaded(data))
                    quiet = 0 if fresh or not data.job.terminal else quiet + 1
                if self._stop.wait(IDLE_INTERVAL_S if quiet > 2 else READ_INTERVAL_S) or app.wait(0):
                    return
        finally:
            reader.close()

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        data: DetailData = message.data
        self.job = data.job
        self.query_one("#detail-head", Static).update(describe(data.job, self.app.clock()))
        for name, values in data.points.items():
            self.points.setdefault(name, []).extend(values)
        self.samples.extend(data.samples)
        if data.log:
            self.log_text.append(data.log)
        if data.device_total and not self.device_total:
            self.device_total = data.device_total
        if (curves := self.panel("curves")) is not None:
            curves.add_points(data.points)
        if (resources := self.panel("resources")) is not None:
            if self.device_total and not resources.device_total:
                resources.device_total = self.device_total
                resources.redraw()
            resources.add_samples(data.samples)
        if (log := self.panel("log")) is not None:
            log.add_text(data.log)
        if data.lineage:
            self.lineage, self.artefacts = data.lineage, data.artefacts
            for tab in ("params", "lineage", "artefacts"):
                self._fill_table(tab)
        self.loads += 1

    def _fill_table(self, tab: str) -> None:
        table = self.panel(tab)
        if table is None or self.job is None:
            return
        table.clear()
        for key, row in self._rows(tab, self.job):
            table.add_row(*row, key=key)

    def _rows(self, tab: str, job: JobRow) -> list[tuple[str, tuple[str, ...]]]:
        if tab == "params":
            stage = all_stages().get(job.stage)
            info = {p.name: p for p in stage.params} if stage else {}
            return [
                (name, (name, json.dumps(value), info[name].kind if name in info else "", info[name].help if name in info else ""))
                for name, value in sorted(job.params.items())
            ]
        if tab == "artefacts":
            return [(name, (name, path)) for name, path in self.artefacts.items()]
        rows: list[tuple[str, JobRow, str]] = []
        for other in self.lineage.get("attempts", []):
            rows.append(("this attempt" if other.id == self.job_id else "attempt", other, "resume" if other.resume else ""))
        rows += [("runs after", other, "--after") for other in self.lineage.get("after", [])]
        rows += [("waited for by", other, "--after") for other in self.lineage.get("dependants", [])]
        rows += [("used by", other, f"params: {why}") for other, why in self.lineage.get("used_by", [])]
        return [(f"{relation}-{other.id}", (relation, str(other.id), other.stage, other.status, str(other.attempt), note))
                for relation, other, note in rows]

    # -- actions --------------------------------------------------------------------------------

    def action_tab(self, step: int) -> None:
        tabs = self.query_one(TabbedContent)
        current = TABS.index(tabs.active) if tabs.active in TABS else 0
        tabs.active = TABS[(current + step) % len(TABS)]

    def action_pager(self) -> None:
        """The whole log in ``$PAGER`` (default ``less``); the app comes back when it exits."""
        path = self.app.workspace.job_dir(self.job_id) / LOG
        if not path.exists():
            self.app.notify(f"job {self.job_id} has no log at {path}", severity="warning")
            return
        pager = shlex.split(os.environ.get("PAGER") or "less -R")
        with self.app.suspend():
            subprocess.run([*pager, str(path)], check=False)

    def action_copy_path(self) -> None:
        """The artefact under the cursor (or the job folder) to the clipboard, via OSC 52."""
        table = self.panel("artefacts")
        path = str(self.app.workspace.job_dir(self.job_id))
        if table is not None and table.row_count:
            path = str(table.get_row_at(table.cursor_row)[1])
        elif self.artefacts:
            path = next(iter(self.artefacts.values()))
        self.app.copy_to_clipboard(path)
        self.app.notify(f"copied {path}")
