"""Cancel, retry and resume from any screen that shows jobs: a confirm, then the job manager.

The work runs in a thread worker with a :class:`JobManager` of its own (cancelling waits out the
grace period; SQLite connections are per thread), through the same manager methods as
``rsna-tui cancel / retry / resume``; errors come back as the CLI's messages, in a toast.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import psutil

from rsna_tui.app.messages import Notice
from rsna_tui.app.poll import open_store
from rsna_tui.app.widgets.confirm import Confirm
from rsna_tui.jobs.manager import JobManager


def group_members(pgid: int) -> list[int]:
    """Pids of the processes in group ``pgid`` (what a cancel signals)."""
    pids = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return sorted(pids)


def cancel_lines(app: Any, ids: list[int], grace: float) -> tuple[list[int], list[str]]:
    """The jobs a cancel will hit and, for each, what it signals; ended jobs are left out.

    Queued jobs come first: cancelling a running job first would fail the jobs waiting for it
    ("dependency cancelled") before their own cancel.
    """
    hit, lines = [], []
    ids = sorted(ids, key=lambda i: (getattr(app.jobs.get(i), "status", "") != "queued", i))
    for job_id in ids:
        line = app.jobs.get(job_id)
        if line is None or line.terminal:
            lines.append(f"job {job_id}: {line.status if line else 'unknown'}, nothing to cancel")
            continue
        hit.append(job_id)
        if line.status == "queued":
            lines.append(f"job {job_id} {line.stage} (queued): removed from the queue, never starts")
        elif line.backend == "local" and line.native_id:
            members = group_members(int(line.native_id))
            pids = ", ".join(map(str, members[:12])) + (" ..." if len(members) > 12 else "")
            lines.append(
                f"job {job_id} {line.stage} ({line.status}): SIGTERM to process group {line.native_id}"
                f" ({len(members)} processes: {pids}), SIGKILL after {grace:g} s"
            )
        else:
            lines.append(f"job {job_id} {line.stage} ({line.status}): cancelled through the {line.backend} backend"
                         + (f" (id {line.native_id})" if line.native_id else ""))
    return hit, lines


class JobActions:
    """Mixin for screens: ``selected_job_ids()`` says which jobs; the actions do the rest."""

    app: Any

    def selected_job_ids(self) -> list[int]:
        raise NotImplementedError

    def action_cancel(self) -> None:
        if not self.app.writable():
            return
        ids = self.selected_job_ids()
        hit, lines = cancel_lines(self.app, ids, self.app.grace)
        if not hit:
            self.app.notify("; ".join(lines) or "no job selected", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._in_thread(f"cancelling {', '.join(map(str, hit))}", lambda m: [
                    f"job {j.id} {j.status}" for j in (m.cancel(i, self.app.grace) for i in hit)
                ])

        self.app.push_screen(Confirm(f"Cancel {len(hit)} job(s)?", lines, yes="Cancel jobs"), answered)

    def action_retry(self) -> None:
        self._again("retry")

    def action_resume(self) -> None:
        self._again("resume")

    def _again(self, verb: str) -> None:
        if not self.app.writable():
            return
        ids = self.selected_job_ids()
        if not ids:
            self.app.notify("no job selected", severity="warning")
            return

        def run(manager: JobManager) -> list[str]:
            out = []
            for job_id in ids:
                new = getattr(manager, verb)(job_id)
                out.append(f"job {job_id} -> job {new.id} (attempt {new.attempt}, {new.status})")
            return out

        self._in_thread(f"{verb} {', '.join(map(str, ids))}", run)

    def _in_thread(self, title: str, work: Callable[[JobManager], list[str]]) -> None:
        app = self.app

        def body() -> None:
            manager = JobManager(app.workspace, open_store(app.workspace, app.db_path, app.readonly))
            try:
                lines = work(manager)
            except Exception as exc:  # the CLI's message (ParameterError, JobError, ...)
                app.post_message(Notice(f"{title}: {exc}", "error", timeout=8))
                return
            finally:
                manager.close()
            app.post_message(Notice("\n".join(lines), title=title))
            app.refresh_now()

        app.run_worker(body, thread=True, exit_on_error=False, group="actions", name=title)
