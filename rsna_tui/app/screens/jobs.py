"""Jobs (home): the live table, its filters and sort, and the job actions."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from rsna_tui.app.actions import JobActions
from rsna_tui.app.messages import JobsChanged
from rsna_tui.app.widgets.job_table import SORTS, JobTable
from rsna_tui.jobs.store import ACTIVE, STATUSES

#: What ``f`` cycles through: all, then each group of statuses.
QUICK_STATUSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("all", ()), ("active", ACTIVE), *((s, (s,)) for s in STATUSES),
)
TICK_S = 1.0


class JobsScreen(JobActions, Screen):
    """Every job of the workspace, newest first, refreshed live."""

    BINDINGS = [
        Binding("enter", "open", "Detail"),
        Binding("n", "app.launch", "New"),
        Binding("c", "cancel", "Cancel"),
        Binding("r", "retry", "Retry"),
        Binding("R", "resume", "Resume", show=False),
        Binding("l", "log", "Log", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("f", "cycle_status", "Status", show=False),
        Binding("g", "cycle_stage", "Stage", show=False),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    AUTO_FOCUS = "#job-table"
    _pending: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: text in id, stage, dataset, status, message (enter: keep, escape: clear)",
                    id="job-filter", classes="hidden")
        yield Static("", id="jobs-status")
        yield JobTable(self.app.clock, id="job-table")
        yield Footer(compact=True)

    @property
    def table(self) -> JobTable:
        return self.query_one(JobTable)

    def on_mount(self) -> None:
        self.app.jobs_signal.subscribe(self, self.on_jobs, immediate=True)
        if self.app.jobs:
            self.table.apply(self.app.jobs.values(), full=True)
        self.set_interval(TICK_S, self.table.tick)
        self.table.focus()
        self.show_status()

    def on_jobs(self, message: JobsChanged) -> None:
        self.table.apply(message.rows, full=message.full)
        if self._pending is not None and self._pending in self.app.jobs:
            self.focus_job(self._pending)
        self.show_status()

    def focus_job(self, job_id: int) -> None:
        """Put the cursor on a job (now, or as soon as a refresh brings it)."""
        self._pending = job_id if job_id not in self.app.jobs else None
        self.table.select(job_id)
        self.table.focus()

    def show_status(self) -> None:
        view = self.table.view
        quick = [name for name, group in QUICK_STATUSES if group == view.statuses]
        table = self.table
        if view.statuses or view.stage or view.text:
            parts = [f"{table.row_count} of {table.matching} matching, {len(self.app.jobs)} jobs"]
        else:
            parts = [f"{table.row_count} of {len(self.app.jobs)} jobs"]
        if view.statuses:
            parts.append(f"status {quick[0] if quick else ','.join(view.statuses)}")
        if view.stage:
            parts.append(f"stage {view.stage}")
        if view.text:
            parts.append(f"filter {view.text!r}")
        if view.marked:
            parts.append(f"{len(view.marked)} marked")
        parts.append(f"sort {view.sort} {'desc' if view.reverse else 'asc'}")
        if self.app.readonly:
            parts.append("read-only")
        self.query_one("#jobs-status", Static).update(" | ".join(parts) + "   f status, g stage, s sort, / filter")

    # -- the selection -----------------------------------------------------------------------------

    def selected_job_ids(self) -> list[int]:
        return self.table.selected_ids()

    def action_open(self) -> None:
        job_id = self.table.current_id
        if job_id is not None:
            self.app.call_next(self.app.run_action, f"open_job({job_id})")

    def on_data_table_row_selected(self, event: JobTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_log(self) -> None:
        from rsna_tui.app.screens.detail import JobDetailScreen

        job_id = self.table.current_id
        if job_id is not None:
            self.app.push_screen(JobDetailScreen(job_id, tab="log"))

    # -- filter and sort ---------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#job-filter", Input)
        box.remove_class("hidden")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "job-filter":
            self.table.view.text = event.value.strip()
            self.table.rebuild()
            self.show_status()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "job-filter":
            if not event.value.strip():
                event.input.add_class("hidden")
            self.table.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#job-filter", Input)
        box.value = ""
        box.add_class("hidden")
        self.set_quick_filter("", "")
        self.table.focus()

    def set_quick_filter(self, status: str = "", stage: str = "") -> None:
        """A status (or ``active``) and a stage; empty strings clear them."""
        groups = dict(QUICK_STATUSES)
        self.table.view.statuses = groups.get(status, (status,)) if status else ()
        self.table.view.stage = stage
        self.table.rebuild()
        self.show_status()

    def action_cycle_status(self) -> None:
        groups = [group for _, group in QUICK_STATUSES]
        index = groups.index(self.table.view.statuses) if self.table.view.statuses in groups else 0
        self.table.view.statuses = groups[(index + 1) % len(groups)]
        self.table.rebuild()
        self.show_status()

    def action_cycle_stage(self) -> None:
        stages = ["", *sorted({line.stage for line in self.app.jobs.values()})]
        index = stages.index(self.table.view.stage) if self.table.view.stage in stages else 0
        self.table.view.stage = stages[(index + 1) % len(stages)]
        self.table.rebuild()
        self.show_status()

    def action_cycle_sort(self) -> None:
        keys = list(SORTS)
        self.table.view.sort = keys[(keys.index(self.table.view.sort) + 1) % len(keys)]
        self.table.rebuild()
        self.show_status()

    def action_reverse_sort(self) -> None:
        self.table.view.reverse = not self.table.view.reverse
        self.table.rebuild()
        self.show_status()
