"""The Jobs screen on real jobs: every status, cancel, retry, resume, and the app as the only manager."""
from __future__ import annotations

import os
import signal

from rsna_tui.jobs.local import group_alive
import pytest

from tests.app.conftest import wait_for
from tests.app.tui.conftest import cell_text, until

pytestmark = pytest.mark.anyio


async def test_table_shows_every_status(manager, make_app) -> None:
    done = manager.submit("test-sleep", overrides=["seconds=0.1"])
    failed = manager.submit("test-sleep", overrides=["seconds=0.1", "fail=true"])
    running = manager.submit("test-sleep", overrides=["seconds=60", "steps=60"])
    waiting = manager.submit("test-sleep", after=[running.id])
    cancelled = manager.submit("test-sleep", after=[running.id])
    manager.cancel(cancelled.id)
    killed = manager.submit("test-sleep", overrides=["seconds=60"])
    killed = wait_for(manager, killed.id, lambda j: j.status == "running")
    os.killpg(int(killed.native_id), signal.SIGKILL)
    wait_for(manager, done.id, lambda j: j.terminal)
    wait_for(manager, failed.id, lambda j: j.terminal)
    expected = {done.id: "succeeded", failed.id: "failed", running.id: "running", waiting.id: "queued",
                cancelled.id: "cancelled", killed.id: "lost"}
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#job-table")
        shown = lambda: {i: cell_text(table, i, "status") for i in expected if i in table.shown_ids}
        await until(pilot, lambda: shown() == expected, what=f"statuses {expected}, table shows {shown()}")
        assert "asked to fail" in cell_text(table, failed.id, "message")
        assert "ended without a finished event" in cell_text(table, killed.id, "message")
        assert cell_text(table, running.id, "elapsed").startswith("0:00:")
        await until(pilot, lambda: "%" in cell_text(table, running.id, "progress"), what="progress with ETA")
        # the selection stays on the same job across refreshes
        table.select(failed.id)
        before = table.cursor_row
        manager.submit("test-sleep", overrides=["seconds=0.1"])
        await until(pilot, lambda: len(table.lines) == len(expected) + 1, what="the new job")
        assert table.current_id == failed.id and table.cursor_row == before + 1


async def test_cancel_ends_the_process_group_after_the_confirm(manager, make_app, workspace) -> None:
    job = manager.submit("test-spawn")
    job = wait_for(manager, job.id, lambda j: j.status == "running" and (workspace / "jobs" / str(j.id) / "children.txt").exists())
    pgid = int(job.native_id)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#job-table")
        await until(pilot, lambda: job.id in table.shown_ids, what="the job in the table")
        table.select(job.id)
        await pilot.press("c")
        dialog = await until(pilot, lambda: type(app.screen).__name__ == "Confirm" and app.screen, what="the confirm")
        text = "\n".join(dialog.lines)
        assert f"process group {pgid}" in text and "SIGKILL after 1 s" in text
        assert group_alive(pgid), "nothing may be signalled before the answer"
        await pilot.press("y")
        await until(pilot, lambda: any(f"job {job.id} cancelled" in n.message for n in app._notifications),
                    timeout=30, what="the cancel to finish (SIGTERM, then SIGKILL for the child that ignores it)")
        assert not group_alive(pgid)
        await until(pilot, lambda: app.jobs[job.id].status == "cancelled", what="cancelled in the table")
        assert cell_text(table, job.id, "status") == "cancelled"


async def test_saying_no_to_the_confirm_cancels_nothing(manager, make_app) -> None:
    job = wait_for(manager, manager.submit("test-sleep", overrides=["seconds=60"]).id, lambda j: j.status == "running")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#job-table")
        await until(pilot, lambda: job.id in table.shown_ids)
        await pilot.press("c")
        await until(pilot, lambda: type(app.screen).__name__ == "Confirm")
        await pilot.press("n")
        await pilot.pause(0.5)
    assert manager.job(job.id).status == "running" and group_alive(int(job.native_id))


async def test_retry_and_resume_make_linked_attempts(manager, make_app) -> None:
    failed = wait_for(manager, manager.submit("test-sleep", overrides=["seconds=0.1", "fail=true"]).id, lambda j: j.terminal)
    trained = wait_for(manager, manager.submit("test-train").id, lambda j: j.terminal)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#job-table")
        await until(pilot, lambda: {failed.id, trained.id} <= set(table.shown_ids))
        table.select(failed.id)
        await pilot.press("r")
        await until(pilot, lambda: len(app.jobs) == 3, what="the retry")
        table.select(trained.id)
        await pilot.press("R")
        await until(pilot, lambda: len(app.jobs) == 4, what="the resume")
    retry, resume = manager.store.list_jobs(limit=2)[::-1]
    assert (retry.parent_id, retry.attempt, retry.resume, retry.params) == (failed.id, 2, False, failed.params)
    assert (resume.parent_id, resume.attempt, resume.resume, resume.params) == (trained.id, 2, True, trained.params)


async def test_marked_jobs_are_cancelled_together(manager, make_app) -> None:
    running = wait_for(manager, manager.submit("test-sleep", overrides=["seconds=60"]).id, lambda j: j.status == "running")
    queued = manager.submit("test-sleep", after=[running.id])
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#job-table")
        await until(pilot, lambda: {running.id, queued.id} <= set(table.shown_ids))
        table.select(queued.id)
        await pilot.press("space")  # marks it and moves down, onto the running job (newest first)
        await pilot.press("space")
        assert table.selected_ids() == sorted([running.id, queued.id])
        await pilot.press("c")
        dialog = await until(pilot, lambda: type(app.screen).__name__ == "Confirm" and app.screen)
        assert any("queued" in line and "never starts" in line for line in dialog.lines)
        await pilot.press("y")
        await until(pilot, lambda: {app.jobs[i].status for i in (running.id, queued.id)} == {"cancelled"}, what="both cancelled")


async def test_queued_jobs_start_when_the_app_is_the_only_manager(manager, make_app) -> None:
    job = manager.submit("test-sleep", overrides=["seconds=0.1"], start=False)  # recorded, no scheduler
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.jobs.get(job.id) and app.jobs[job.id].status == "succeeded",
                    what="the queued job to run to the end")
    assert manager.job(job.id).status == "succeeded"


async def test_a_job_that_ends_raises_a_toast(manager, make_app) -> None:
    job = manager.submit("test-sleep", overrides=["seconds=1", "fail=true"])
    app = make_app(bell=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: any(f"job {job.id} (test-sleep) failed" in n.message for n in app._notifications),
                    what="a toast saying the job failed")
