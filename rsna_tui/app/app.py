"""The App: the table of screens and their keys, global bindings, the poll worker, read-only mode.

Each top-level screen is a Textual *mode* (its own screen stack), listed once in :data:`SCREENS`:
the key bindings, the footer, the help and the command palette are all built from that table, so
adding a screen is one line. Screens reach shared state through the app: :attr:`RsnaApp.workspace`,
:attr:`RsnaApp.db_path`, :attr:`RsnaApp.readonly`, the latest job lines (:attr:`RsnaApp.jobs`) and
:attr:`RsnaApp.jobs_signal` (published after every refresh that changed something). A screen that
reads the store does it in its own thread worker with its own :class:`~rsna_tui.jobs.store.Store`.
"""
from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.signal import Signal
from textual.worker import get_current_worker

from rsna_tui.app.commands import RsnaCommands
from rsna_tui.app.review_commands import ReviewCommands
from rsna_tui.app.messages import JobsChanged, Notice, PollFailed
from rsna_tui.app.poll import POLL_INTERVAL_S, JobLine, Poller, timed_poll
from rsna_tui.jobs.manager import DEFAULT_GRACE_S
from rsna_tui.workspace import Workspace

BELL_VAR = "RSNA_TUI_BELL"
#: After a hang-up, how long the poll worker may take to hand queued jobs on before the process ends.
HANGUP_GRACE_S = 5.0
READONLY_REASON = "read-only: --db opens {db} read-only; open a workspace (--workspace) to launch or change jobs"


#: The footer shows the screen keys as one compact group ("1 2 3 4 5 screens").
SCREEN_KEYS = Binding.Group("screens", compact=True)


@dataclass(frozen=True)
class ScreenEntry:
    """One top-level screen: its mode name, the key that opens it from anywhere, and its class."""

    mode: str
    key: str
    title: str
    #: ``module:Class``, imported when the screen is first opened.
    target: str
    help: str

    def factory(self) -> Screen:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)()


#: Every top-level screen, in footer order. Add one here (and its module under screens/).
SCREENS: tuple[ScreenEntry, ...] = (
    ScreenEntry("jobs", "1", "Jobs", "rsna_tui.app.screens.jobs:JobsScreen", "every job, live"),
    ScreenEntry("launch", "2", "Launch", "rsna_tui.app.screens.launch:LaunchScreen", "submit a stage as a job"),
    ScreenEntry("datasets", "3", "Datasets", "rsna_tui.app.screens.datasets:DatasetsScreen", "datasets and conversion"),
    ScreenEntry("pipeline", "4", "Pipeline", "rsna_tui.app.screens.pipeline:PipelineScreen", "stage chain of a dataset"),
    ScreenEntry("gpus", "5", "GPUs", "rsna_tui.app.screens.gpus:GpusScreen", "devices and their processes"),
    ScreenEntry("review", "6", "Review", "rsna_tui.app.screens.review:ReviewScreen",
                "a predict job's cases against the truth, slices with overlays"),
)


class RsnaApp(App[None]):
    """``rsna-tui``: jobs, launches, datasets, pipeline and GPUs of one workspace."""

    CSS_PATH = "app.tcss"
    TITLE = "rsna-tui"
    MODES = {entry.mode: entry.factory for entry in SCREENS}
    COMMANDS = App.COMMANDS | {RsnaCommands, ReviewCommands}
    BINDINGS = [
        *(Binding(e.key, f"app.switch_mode('{e.mode}')", e.title, id=f"screen.{e.mode}", group=SCREEN_KEYS)
          for e in SCREENS),
        Binding("question_mark", "app.help", "Keys", id="help"),
        Binding("q", "app.quit", "Quit", id="quit"),
    ]

    def __init__(
        self,
        workspace: Workspace,
        db_path: Path | None = None,
        readonly: bool = False,
        *,
        clock: Callable[[], float] = time.time,
        gpu_sampler: Callable[[], Any] | None = None,
        poll_interval: float = POLL_INTERVAL_S,
        bell: bool | None = None,
        grace: float = DEFAULT_GRACE_S,
    ) -> None:
        super().__init__()
        self.workspace = workspace
        self.db_path = Path(db_path) if db_path else workspace.db_path
        self.readonly = readonly
        #: Time source of every "elapsed" and "ETA" shown; tests and screenshots pass a fixed one.
        self.clock = clock
        self.gpu_sampler = gpu_sampler
        self.poll_interval = poll_interval
        #: Seconds between SIGTERM and SIGKILL when cancelling (as ``rsna-tui cancel --grace``).
        self.grace = grace
        self.bell_enabled = os.environ.get(BELL_VAR, "") not in ("", "0") if bell is None else bell
        self.jobs: dict[int, JobLine] = {}
        self.jobs_signal: Signal[JobsChanged] = Signal(self, "jobs")
        self.loaded = threading.Event()
        self.poll_seconds = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        #: Set when the poll worker has finished (queued jobs handed on).
        self._left = threading.Event()
        self.sub_title = f"{self.db_path}" + (" (read-only)" if readonly else "")

    # -- start and stop --------------------------------------------------------------------------

    def on_mount(self) -> None:
        try:
            import asyncio

            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.hang_up)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests) or no signals here
        self.switch_mode("jobs")
        self.poll()

    def hang_up(self) -> None:
        """The terminal went away (SSH drop, tmux killed): stop, whatever the terminal does.

        Restoring a terminal that is gone can block Textual's output thread for ever, so once the
        poll worker has handed queued jobs to the scheduler the process ends without it. Jobs are
        sessions of their own: they keep running.
        """
        def end_soon() -> None:
            self._left.wait(HANGUP_GRACE_S)
            os._exit(0)

        threading.Thread(target=end_soon, name="hang-up", daemon=True).start()
        self.exit()

    def exit(self, *args: Any, **kwargs: Any) -> None:
        """Quit: the worker loops end with the app (a thread still looping would keep the process)."""
        self._stopping.set()
        self._wake.set()
        super().exit(*args, **kwargs)

    def keeps_running(self) -> bool:
        """For worker loops: False once the app quits or the interpreter shuts down."""
        return not self._stopping.is_set() and threading.main_thread().is_alive()

    def wait(self, seconds: float) -> bool:
        """Sleep in a worker until ``seconds`` pass; True when the app quits meanwhile."""
        return self._stopping.wait(seconds) or not threading.main_thread().is_alive()

    def refresh_now(self) -> None:
        """Wake the poll worker at once (after an action that changed jobs)."""
        self._wake.set()

    @work(thread=True, exclusive=True, exit_on_error=False, group="poll", name="poll")
    def poll(self) -> None:
        """The refresh loop: one cycle, a message, a pause; a failed cycle is reported, not fatal."""
        worker = get_current_worker()
        poller = Poller(self.workspace, self.db_path, self.readonly)
        try:
            while not worker.is_cancelled and self.keeps_running():
                try:
                    changed, ended, full, seconds = timed_poll(poller)
                except Exception as exc:  # a locked, missing or broken database: say so, try again
                    self.post_message(PollFailed(f"{type(exc).__name__}: {exc}"))
                    poller.close()
                    poller = Poller(self.workspace, self.db_path, self.readonly)
                else:
                    if changed or full:
                        self.post_message(JobsChanged(changed, ended, full, seconds))
                    self.poll_seconds = seconds
                self._wake.wait(self.poll_interval)
                self._wake.clear()
        finally:
            try:
                waiting = poller.leave()
            except Exception:
                waiting = 0
            poller.close()
            self._left.set()
            if waiting:
                self.log(f"{waiting} queued job(s) handed to the background scheduler")

    def on_jobs_changed(self, message: JobsChanged) -> None:
        for line in message.rows:
            self.jobs[line.id] = line
        self.jobs_signal.publish(message)
        self.loaded.set()
        for line in message.ended:
            severity = "information" if line.status == "succeeded" else "error" if line.status in ("failed", "lost") else "warning"
            detail = f": {line.error.splitlines()[0]}" if line.error and line.status != "succeeded" else ""
            self.notify(f"job {line.id} ({line.stage}) {line.status}{detail}", severity=severity)  # type: ignore[arg-type]
            if self.bell_enabled:
                self.bell()

    def on_notice(self, message: Notice) -> None:
        self.notify(message.text, title=message.title, severity=message.severity, timeout=message.timeout)  # type: ignore[arg-type]

    def on_poll_failed(self, message: PollFailed) -> None:
        self.notify(f"refresh failed: {message.error}", severity="error", timeout=4)

    # -- shared helpers for screens ----------------------------------------------------------------

    def writable(self) -> bool:
        """True when actions may change jobs; otherwise says why (toast) and returns False."""
        if self.readonly:
            self.notify(READONLY_REASON.format(db=self.db_path), severity="warning")
            return False
        return True

    def action_help(self) -> None:
        from rsna_tui.app.screens.help import HelpScreen

        self.push_screen(HelpScreen(self.screen))

    async def action_launch(self, stage: str = "") -> None:
        """Open the launch screen, on ``stage`` when given."""
        await self.switch_mode("launch")
        if stage:
            self.screen.choose_stage(stage)  # type: ignore[attr-defined]

    async def action_open_job(self, job_id: int) -> None:
        from rsna_tui.app.screens.detail import JobDetailScreen

        if self.current_mode != "jobs":
            await self.switch_mode("jobs")
        await self.push_screen(JobDetailScreen(int(job_id)))

    async def action_filter_jobs(self, status: str = "", stage: str = "") -> None:
        await self.switch_mode("jobs")
        self.get_jobs_screen().set_quick_filter(status, stage)

    async def action_jobs_action(self, name: str) -> None:
        """A job action (cancel, retry, resume, log) on the current screen's selection."""
        if not hasattr(self.screen, f"action_{name}"):
            await self.switch_mode("jobs")
        await self.screen.run_action(name)

    def get_jobs_screen(self) -> Any:
        from rsna_tui.app.screens.jobs import JobsScreen

        for screen in self.screen_stack:
            if isinstance(screen, JobsScreen):
                return screen
        raise LookupError("the Jobs screen is not open")

    def action_toggle_bell(self) -> None:
        self.bell_enabled = not self.bell_enabled
        self.notify(f"bell {'on' if self.bell_enabled else 'off'} when a job ends")


def run_app(workspace: Workspace, db: Path | None) -> None:
    """Open the app (the CLI's bare ``rsna-tui``)."""
    RsnaApp(workspace, db, readonly=db is not None).run()
