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
from rsna_tui.app.messages import DetailData, DetailLoaded
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


class JobDetailScreen(JobActions, Screen):
    AUTO_FOCUS = "#metric-picker"
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

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"job {self.job_id}: loading", id="detail-head")
        with TabbedContent(initial=self.first_tab, id="detail-tabs"):
            with TabPane("Curves", id="curves"):
                yield CurvePanel(id="curves-body")
            with TabPane("Resources", id="resources"):
                yield ResourcePanel(id="resources-body")
            with TabPane("Log", id="log"):
                yield LogTail(id="log-body")
            with TabPane("Params", id="params"):
                yield DataTable(id="params-table", cursor_type="row")
            with TabPane("Lineage", id="lineage"):
                yield DataTable(id="lineage-table", cursor_type="row")
            with TabPane("Artefacts", id="artefacts"):
                yield DataTable(id="artefacts-table", cursor_type="row")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#params-table", DataTable).add_columns("parameter", "value", "type", "help")
        self.query_one("#lineage-table", DataTable).add_columns("relation", "job", "stage", "status", "try", "note")
        self.query_one("#artefacts-table", DataTable).add_columns("name", "path")
        self.read()

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
        sampler = app.gpu_sampler or sample_machine
        try:
            device_total = max((d.mem_total for d in sampler().devices), default=None)
        except Exception:
            device_total = None
        try:
            quiet = 0
            while not worker.is_cancelled:
                try:
                    data = reader.read()
                except Exception as exc:
                    app.call_from_thread(app.notify, f"job {self.job_id}: {exc}", severity="error")
                    return
                data.device_total = device_total
                fresh = data.full or data.points or data.samples or data.log or data.lineage
                if fresh:
                    self.post_message(DetailLoaded(data))
                quiet = 0 if fresh or not data.job.terminal else quiet + 1
                if self._stop.wait(IDLE_INTERVAL_S if quiet > 2 else READ_INTERVAL_S):
                    return
        finally:
            reader.close()

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        data: DetailData = message.data
        self.job = data.job
        self.query_one("#detail-head", Static).update(describe(data.job, self.app.clock()))
        self.query_one(CurvePanel).add_points(data.points)
        resources = self.query_one(ResourcePanel)
        if data.full and data.device_total:
            resources.device_total = data.device_total
        resources.add_samples(data.samples)
        self.query_one(LogTail).add_text(data.log)
        if data.full:
            self._params(data.job)
        if data.lineage:
            self._lineage(data.lineage)
            table = self.query_one("#artefacts-table", DataTable)
            table.clear()
            for name, path in data.artefacts.items():
                table.add_row(name, path, key=name)
        self.loads += 1

    def _params(self, job: JobRow) -> None:
        table = self.query_one("#params-table", DataTable)
        stage = all_stages().get(job.stage)
        info = {p.name: p for p in stage.params} if stage else {}
        for name, value in sorted(job.params.items()):
            param = info.get(name)
            table.add_row(name, json.dumps(value), param.kind if param else "", param.help if param else "", key=name)

    def _lineage(self, lineage: dict[str, list[Any]]) -> None:
        table = self.query_one("#lineage-table", DataTable)
        table.clear()
        rows: list[tuple[str, JobRow, str]] = []
        for job in lineage.get("attempts", []):
            rows.append(("this attempt" if job.id == self.job_id else "attempt", job, "resume" if job.resume else ""))
        rows += [("runs after", job, "--after") for job in lineage.get("after", [])]
        rows += [("waited for by", job, "--after") for job in lineage.get("dependants", [])]
        rows += [("used by", job, f"params: {why}") for job, why in lineage.get("used_by", [])]
        for relation, job, note in rows:
            table.add_row(relation, str(job.id), job.stage, job.status, str(job.attempt), note)

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
        table = self.query_one("#artefacts-table", DataTable)
        path = str(self.app.workspace.job_dir(self.job_id))
        if table.row_count:
            path = str(table.get_row_at(table.cursor_row)[1])
        self.app.copy_to_clipboard(path)
        self.app.notify(f"copied {path}")
