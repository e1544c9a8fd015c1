"""Launch: pick a stage and a profile, fill the form, pick jobs to run after, see the command, submit.

The form and its checks come from the stage table; submitting goes through the planner exactly
as ``rsna-tui run`` does (``submit_plan(plan(manager, stage, profile, ["key=value", ...]), after)``:
missing upstream jobs are submitted, an equal finished job is reused), after ``Stage.resolve``
raised nothing: a bad value shows the CLI's own message (on its field and below the form) and
nothing is submitted. The preview is that command line.
"""
from __future__ import annotations

import shlex

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, SelectionList, Static

from engine.stages import PROFILES, ParameterError
from rsna_tui.app.messages import JobsChanged
from rsna_tui.app.poll import open_store
from rsna_tui.app.widgets.param_form import ParamForm
from rsna_tui.jobs.manager import JobManager
from rsna_tui.jobs.planner import plan, submit_plan
from rsna_tui.jobs.stage_table import all_stages, find_stage

#: How many recent jobs the "run after" list offers beside the active ones.
RECENT_AFTER = 15


def command_line(workspace: str | None, db: str | None, stage: str, profile: str, overrides: list[str], after: list[int]) -> str:
    """The ``rsna-tui run`` command that submits the same job."""
    args = ["rsna-tui"]
    if workspace:
        args += ["--workspace", workspace]
    args += ["run", "--stage", stage, "--profile", profile]
    for item in overrides:
        args += ["--set", item]
    for job_id in after:
        args += ["--after", str(job_id)]
    return " ".join(shlex.quote(a) for a in args)


class LaunchScreen(Screen):
    AUTO_FOCUS = "#stage-select"
    BINDINGS = [
        Binding("ctrl+s", "submit", "Submit"),
        Binding("escape", "leave_field", "Keys", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.stages = all_stages()
        self.stage = next(iter(self.stages))
        self.profile = "tiny" if "tiny" in PROFILES else PROFILES[0]
        self._focus_form = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="launch-body"):
            with Horizontal(id="launch-top"):
                yield Select([(n, n) for n in self.stages], value=self.stage, allow_blank=False, id="stage-select")
                yield Select([(p, p) for p in PROFILES], value=self.profile, allow_blank=False, id="profile-select")
            yield Static("", id="stage-help", markup=False)
            yield Vertical(id="form-holder")
            yield Label("run after (Space to pick; the job starts when these succeeded):")
            yield SelectionList[int](id="after-list")
            yield Static("", id="preview", markup=False)
            yield Static("", id="launch-error", markup=False)
            yield Button("Submit (ctrl+s)", id="submit", variant="primary")
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        self.app.jobs_signal.subscribe(self, self.on_jobs)
        await self.build_form()
        self.fill_after()

    # -- building -----------------------------------------------------------------------------------

    def choose_stage(self, stage: str) -> None:
        """Show the form of ``stage`` with the cursor in its first field (palette: "Launch stage X")."""
        self._focus_form = True
        if stage == self.stage:
            self.call_after_refresh(self._focus_first_field)
        self.query_one("#stage-select", Select).value = stage

    def _focus_first_field(self) -> None:
        self._focus_form = False
        fields = self.query(".param-input")
        if fields:
            fields.first().focus()

    async def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "stage-select" and event.value != self.stage:
            self.stage = str(event.value)
            await self.build_form()
        elif event.select.id == "profile-select" and event.value != self.profile:
            self.profile = str(event.value)
            await self.build_form()

    async def build_form(self) -> None:
        definition = self.stages[self.stage]
        holder = self.query_one("#form-holder", Vertical)
        await holder.remove_children()
        error = ""
        try:
            defaults = definition.defaults(self.profile)
        except ParameterError as exc:
            defaults, error = {}, str(exc)
        await holder.mount(ParamForm(definition, defaults, id="param-form"))
        self.query_one("#stage-help", Static).update(f"{definition.help}{self._slots_text()}")
        self.show_error(error)
        self.call_after_refresh(self.update_preview)
        if self._focus_form:
            self.call_after_refresh(self._focus_first_field)

    def _slots_text(self) -> str:
        definition = self.stages[self.stage]
        if not definition.gpu:
            return "  [CPU stage: starts at once]"
        slots = self._gpu_slots()
        busy = sum(
            1 for line in self.app.jobs.values()
            if line.status in ("starting", "running") and getattr(self.stages.get(line.stage), "gpu", False)
        )
        return f"  [GPU stage: {max(0, slots - busy)} of {slots} GPU slots free]"

    def _gpu_slots(self) -> int:
        if not hasattr(self, "_slots"):
            from rsna_tui.jobs.gpus import gpu_slots

            self._slots = gpu_slots()
        return self._slots

    def fill_after(self) -> None:
        after = self.query_one("#after-list", SelectionList)
        chosen = set(after.selected)
        lines = sorted(self.app.jobs.values(), key=lambda l: l.id, reverse=True)
        offered = [l for l in lines if not l.terminal] + [l for l in lines if l.terminal][:RECENT_AFTER]
        after.clear_options()
        for line in sorted(offered, key=lambda l: l.id, reverse=True):
            after.add_option((f"{line.id} {line.stage} {line.dataset} {line.status}", line.id, line.id in chosen))

    def on_jobs(self, message: JobsChanged) -> None:
        if any(line.id not in self._after_ids() or line.terminal for line in message.rows):
            self.fill_after()

    def _after_ids(self) -> set[int]:
        after = self.query_one("#after-list", SelectionList)
        return {after.get_option_at_index(i).value for i in range(after.option_count)}

    # -- preview and submit -----------------------------------------------------------------------

    @property
    def form(self) -> ParamForm | None:
        forms = self.query(ParamForm)
        return forms.first() if forms else None

    def request(self) -> tuple[list[str], list[int]]:
        form = self.form
        return (form.overrides() if form else []), sorted(self.query_one("#after-list", SelectionList).selected)

    def update_preview(self) -> None:
        overrides, after = self.request()
        app = self.app
        workspace = None if app.readonly else str(app.workspace.root)
        self.query_one("#preview", Static).update(
            "$ " + command_line(workspace, None, self.stage, self.profile, overrides, after)
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        self.update_preview()
        self.show_error("")

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        self.update_preview()

    def show_error(self, text: str) -> None:
        box = self.query_one("#launch-error", Static)
        box.update(text)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self.action_submit()

    def action_leave_field(self) -> None:
        """Escape: leave the field, so that the screen keys (1-5, ?) work again."""
        self.set_focus(None)

    def action_submit(self) -> None:
        if not self.app.writable():
            self.show_error("read-only: this database was opened with --db; nothing was submitted")
            return
        overrides, after = self.request()
        form = self.form
        try:
            find_stage(self.stage).resolve(self.profile, overrides)  # the CLI's checks and messages
        except ParameterError as exc:
            message = str(exc)
            key = message.split(":", 1)[0].strip()
            if form and key in {p.name for p in form.stage.params}:
                form.show_error(key, message)
            self.show_error(f"error: {message}\nnothing was submitted")
            return
        self._submit(self.stage, self.profile, overrides, after)

    def _submit(self, stage: str, profile: str, overrides: list[str], after: list[int]) -> None:
        app = self.app

        def body() -> None:
            manager = JobManager(app.workspace, open_store(app.workspace, app.db_path, app.readonly))
            try:  # what `rsna-tui run` does: plan the missing upstream jobs, reuse equal ones, submit
                done = submit_plan(manager, plan(manager, stage, profile, overrides), after)
                job = manager.job(done.target_step.job_id)
            except Exception as exc:
                app.call_from_thread(self.show_error, f"error: {exc}\nnothing was submitted")
                return
            finally:
                manager.close()
            app.call_from_thread(self._submitted, job.id, job.status)

        self.show_error("submitting ...")
        app.run_worker(body, thread=True, exit_on_error=False, group="submit", name=f"submit {stage}")

    def _submitted(self, job_id: int, status: str) -> None:
        self.show_error("")
        self.app.notify(f"job {job_id} ({self.stage}) submitted: {status}")
        self.app.refresh_now()
        self.app.call_next(self._show_job, job_id)

    async def _show_job(self, job_id: int) -> None:
        await self.app.switch_mode("jobs")
        self.app.get_jobs_screen().focus_job(job_id)
