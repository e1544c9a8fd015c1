"""Snapshots of every screen at 80x24 and 120x40 on a deterministic database (fixed clock, no live data).

Update after looking at every changed picture: ``pytest tests/app/tui/test_snapshots.py --snapshot-update``.
"""
from __future__ import annotations

from typing import Any

import pytest

from rsna_tui.app.app import RsnaApp
from rsna_tui.workspace import Workspace
from tests.app.tui.conftest import until
from tests.app.tui.snapshot_db import NOW, ROOT, build, fake_machine

SIZES = [(80, 24), (120, 40)]


@pytest.fixture(scope="module")
def snapshot_db() -> Any:
    return build(ROOT)


def make(db: Any) -> RsnaApp:
    return RsnaApp(Workspace(ROOT), db, readonly=True, clock=lambda: NOW, gpu_sampler=fake_machine, poll_interval=0.2)


def prepared(*keys: str, job: int | None = None, settle: float = 0.6):
    """A ``run_before`` that waits for the first refresh, opens a job or presses keys, and settles."""

    async def run_before(pilot: Any) -> None:
        app = pilot.app
        await until(pilot, app.loaded.is_set, what="the first refresh")
        if job is not None:
            await app.run_action(f"open_job({job})")
            await until(pilot, lambda: getattr(app.screen, "loads", 0) > 0, what=f"job {job} detail")
        if keys:
            await pilot.press(*keys)
        await pilot.pause(settle)
        await pilot.wait_for_scheduled_animations()

    return run_before


CASES = {
    "jobs": prepared(),
    "detail_curves": prepared(job=4),
    "detail_resources": prepared("right_square_bracket", job=4),
    "detail_log": prepared("right_square_bracket", "right_square_bracket", job=4),
    "detail_lineage": prepared(*["right_square_bracket"] * 4, job=9),
    "launch": prepared("2"),
    "datasets": prepared("3"),
    "pipeline": prepared("4"),
    "gpus": prepared("5", settle=1.0),
    "help": prepared("question_mark"),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", list(CASES))
def test_screen(case: str, size: tuple[int, int], snap_compare: Any, snapshot_db: Any) -> None:
    assert snap_compare(make(snapshot_db), terminal_size=size, run_before=CASES[case])
