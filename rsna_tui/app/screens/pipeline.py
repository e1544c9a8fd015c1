"""Pipeline: one dataset's stage chain, each stage's latest job, the planner's dry run, "run up to here".

The plan is ``rsna_tui.jobs.planner.plan(manager, stage, profile, overrides)``, the planner behind
``rsna-tui run --stage X``: which upstream steps are reused, waited for or run. "Run up to here"
(``u``) confirms that list and hands it to ``submit_plan``. Plans are computed in a thread worker
with a manager of its own.
"""
from __future__ import annotations

import importlib
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from rsna_tui.app.messages import JobsChanged, Notice
from rsna_tui.app.poll import open_store
from rsna_tui.app.widgets.confirm import Confirm
from rsna_tui.app.widgets.job_table import STATUS_STYLE
from rsna_tui.jobs.manager import JobManager
from rsna_tui.jobs.stage_table import all_stages

PLANNER_MODULE = "rsna_tui.jobs.planner"
#: The stage chain, upstream first (the order of ``engine.pipeline.DEMO_PIPELINE``).
CHAIN = ("demo-data", "convert", "stage1-data", "train2d", "roi", "train3d", "finetune1", "finetune2", "predict", "evaluate")


def planner_api() -> Any:
    try:
        return importlib.import_module(PLANNER_MODULE)
    except ImportError:
        return None


def step_line(step: Any) -> str:
    job = f" job {step.job_id}" if getattr(step, "job_id", None) else ""
    return f"{step.action:5} {step.stage}{job}: {step.reason}"


class PipelineScreen(Screen):
    AUTO_FOCUS = "#chain-table"
    BINDINGS = [
        Binding("u", "run_up_to", "Run up to here"),
        Binding("p", "toggle_profile", "Profile"),
        Binding("D", "dataset", "Dataset"),
        Binding("escape", "leave_field", "Keys", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.dataset = "demo"
        self.profile = "tiny"
        self.plans: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="pipeline-note", classes="screen-status")
        yield Input(placeholder="dataset name (enter)", id="pipeline-dataset", classes="hidden")
        with Horizontal():
            yield DataTable(id="chain-table", cursor_type="row", classes="screen-table")
            with VerticalScroll(classes="side-panel"):
                yield Static("", id="plan-view", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#chain-table", DataTable)
        table.add_columns("stage", "latest job", "status")
        self.app.jobs_signal.subscribe(self, self.on_jobs)
        self.fill()

    def on_jobs(self, message: JobsChanged) -> None:
        if any(line.stage in CHAIN for line in message.rows):
            self.fill()

    def stage_under_cursor(self) -> str:
        table = self.query_one("#chain-table", DataTable)
        if not table.row_count:
            return CHAIN[0]
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def fill(self) -> None:
        """Each stage of the chain with its latest job on this dataset (any dataset for stages without one)."""
        stages = all_stages()
        latest: dict[str, Any] = {}
        for line in self.app.jobs.values():
            takes = any(p.name == "dataset" for p in stages[line.stage].params) if line.stage in stages else False
            if line.stage in CHAIN and (not takes or line.dataset == self.dataset):
                if line.stage not in latest or line.id > latest[line.stage].id:
                    latest[line.stage] = line
        table = self.query_one("#chain-table", DataTable)
        keep = self.stage_under_cursor() if table.row_count else None
        table.clear()
        for stage in CHAIN:
            line = latest.get(stage)
            status = line.status if line else "never run"
            table.add_row(stage, str(line.id) if line else "", f"[{STATUS_STYLE.get(status, 'dim')}]{status}[/]", key=stage)
        if keep:
            table.move_cursor(row=CHAIN.index(keep), animate=False)
        self.query_one("#pipeline-note", Static).update(
            f"dataset {self.dataset} | profile {self.profile}   u run up to here, p profile, D dataset"
        )
        if not planner_api():
            self.query_one("#plan-view", Static).update(f"{PLANNER_MODULE} is not in this build: no plan to show")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value and planner_api():
            self.make_plan(str(event.row_key.value))

    def _overrides(self, stage: str) -> list[str]:
        """``dataset=NAME``: the planner gives it to every stage of the chain that takes one."""
        return [f"dataset={self.dataset}"]

    def _plan(self, api: Any, manager: JobManager, stage: str) -> Any:
        """The plan on this screen's dataset; stages upstream of any dataset (demo-data) plan without."""
        from engine.stages import ParameterError

        try:
            return api.plan(manager, stage, self.profile, self._overrides(stage))
        except ParameterError as exc:
            if "reads a dataset" not in str(exc):
                raise
            return api.plan(manager, stage, self.profile, [])

    @work(thread=True, exclusive=True, exit_on_error=False, group="plan")
    def make_plan(self, stage: str) -> None:
        app = self.app
        api = planner_api()
        manager = JobManager(app.workspace, open_store(app.workspace, app.db_path, app.readonly))
        try:
            result = self._plan(api, manager, stage)
            self.plans[stage] = result
            text = f"plan for {stage} ({self.profile}, dataset {self.dataset}):\n" + "\n".join(step_line(s) for s in result.steps)
        except Exception as exc:  # the planner's message (unknown dataset, bad parameter, ...)
            text = f"no plan for {stage}: {exc}"
            self.plans.pop(stage, None)
        finally:
            manager.close()
        app.call_from_thread(self.query_one("#plan-view", Static).update, text)

    def action_run_up_to(self) -> None:
        if not self.app.writable():
            return
        stage = self.stage_under_cursor()
        plan = self.plans.get(stage)
        if plan is None:
            self.app.notify(f"no plan for {stage} yet (see the panel)", severity="warning")
            return
        to_run = [s for s in plan.steps if s.action == "run"]
        if not to_run:
            self.app.notify(f"nothing to run: every step up to {stage} is done or under way")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.submit(stage)

        self.app.push_screen(Confirm(f"Submit {len(to_run)} job(s) up to {stage}?", [step_line(s) for s in plan.steps],
                                     yes="Submit"), answered)

    @work(thread=True, exit_on_error=False, group="plan-submit")
    def submit(self, stage: str) -> None:
        app = self.app
        api = planner_api()
        manager = JobManager(app.workspace, open_store(app.workspace, app.db_path, app.readonly))
        try:
            done = api.submit_plan(manager, self._plan(api, manager, stage))
            ids = [str(s.job_id) for s in done.steps if s.action == "run"]
            app.post_message(Notice(f"submitted up to {stage}: jobs {', '.join(ids)}"))
        except Exception as exc:
            app.post_message(Notice(f"run up to {stage}: {exc}", "error", timeout=8))
        finally:
            manager.close()
        app.refresh_now()

    def action_toggle_profile(self) -> None:
        from engine.stages import PROFILES

        self.profile = PROFILES[(PROFILES.index(self.profile) + 1) % len(PROFILES)]
        self.fill()
        if planner_api():
            self.make_plan(self.stage_under_cursor())

    def action_dataset(self) -> None:
        box = self.query_one("#pipeline-dataset", Input)
        box.remove_class("hidden")
        box.focus()

    def action_leave_field(self) -> None:
        self.query_one("#pipeline-dataset", Input).add_class("hidden")
        self.set_focus(self.query_one("#chain-table", DataTable))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "pipeline-dataset" and event.value.strip():
            self.dataset = event.value.strip()
            self.action_leave_field()
            self.fill()
            if planner_api():
                self.make_plan(self.stage_under_cursor())
