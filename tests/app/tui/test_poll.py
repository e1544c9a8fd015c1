"""The app's refresh: only what changed is read and reported, and a big workspace fills in two steps."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from rsna_tui.app.app import RsnaApp
from rsna_tui.app.poll import FIRST_ROWS, Poller
from rsna_tui.app.widgets.job_table import WINDOW
from rsna_tui.jobs.store import JobRow, Store
from rsna_tui.workspace import Workspace
from tests.app.tui.conftest import until


def _insert(db: Path, n: int, stage: str = "convert") -> None:
    with Store(db) as store:
        for i in range(n):
            store.insert_job(JobRow(id=0, stage=stage, profile="tiny", params={"dataset": f"d{i}"}, status="succeeded",
                                    created_at=time.time(), started_at=1.0, finished_at=2.0))


def test_a_cycle_reports_only_changed_jobs(manager, workspace: Path) -> None:
    _insert(workspace / "jobs.db", 3)
    poller = Poller(Workspace(workspace), workspace / "jobs.db", readonly=False)
    try:
        rows, ended, full = poller.poll()
        assert full and [r.id for r in rows] == [1, 2, 3] and not ended
        assert poller.poll() == ([], [], False), "nothing changed: nothing read"
        job = manager.submit("test-sleep", overrides=["seconds=0.1"])  # another connection writes
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 30
        while seen.get(job.id) != "succeeded" and time.monotonic() < deadline:
            rows, ended, full = poller.poll()
            assert not full and {r.id for r in rows} <= {job.id}, "terminal jobs are not read again"
            seen.update({r.id: r.status for r in rows})
            time.sleep(0.05)
        assert seen[job.id] == "succeeded"
    finally:
        poller.close()


def test_a_job_that_ends_is_reported_once(manager, workspace: Path) -> None:
    job = manager.submit("test-sleep", overrides=["seconds=1"])
    poller = Poller(Workspace(workspace), workspace / "jobs.db", readonly=False)
    try:
        poller.poll()
        ended_all = []
        deadline = time.monotonic() + 30
        while not ended_all and time.monotonic() < deadline:
            ended_all += poller.poll()[1]
            time.sleep(0.05)
        assert [(j.id, j.status) for j in ended_all] == [(job.id, "succeeded")]
        assert poller.poll()[1] == []
    finally:
        poller.close()


@pytest.mark.anyio
async def test_many_jobs_paint_the_newest_first_and_filter_reaches_all(workspace: Path, job_env) -> None:
    db = workspace / "jobs.db"
    _insert(db, FIRST_ROWS + 100, stage="convert")
    _insert(db, 1, stage="evaluate")
    with Store(db) as store, store.write() as conn:
        conn.execute("UPDATE jobs SET stage = 'roi' WHERE id = 1")  # the oldest job, outside the first read
    app = RsnaApp(Workspace(workspace), poll_interval=0.1)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one("#job-table")
        await until(pilot, lambda: len(app.jobs) == FIRST_ROWS + 101, what="every job, in two reads")
        assert table.row_count == WINDOW and table.shown_ids[0] == FIRST_ROWS + 101
        assert f"{WINDOW} of {FIRST_ROWS + 101} jobs" in str(app.screen.query_one("#jobs-status").render())
        app.screen.set_quick_filter("", "roi")
        assert table.shown_ids == [1]
        assert f"1 of 1 matching, {FIRST_ROWS + 101} jobs" in str(app.screen.query_one("#jobs-status").render())
        await pilot.press("slash", *"d17")
        app.screen.set_quick_filter("", "")
        assert set(table.shown_ids) == {i + 1 for i in range(FIRST_ROWS + 100) if "d17" in f"d{i}"}
