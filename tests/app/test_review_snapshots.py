"""Snapshots of the case table and the case view at 80 x 24 and 120 x 40, half-block renderer.

The job's seconds differ from run to run, so the snapshots read a copy of its database with every
case's seconds set to 1.0; everything else on screen (probabilities of seeded untrained models, the
demo's seeded UIDs, the AUCs) is deterministic. Update with ``pytest --snapshot-update`` after
looking at the new pictures.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from rsna_tui.jobs.store import Store
from tests.app.review_job import ReviewJob
from rsna_tui.app.review_app import ReviewApp
from tests.app.test_review_screen import settle

SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def steady_db(review_job: ReviewJob, tmp_path: Path) -> Path:
    with Store(review_job.db) as store:
        path = store.snapshot(tmp_path / "jobs.db")
    with Store(path) as store, store.write() as conn:
        conn.execute("UPDATE case_predictions SET seconds = 1.0")
    return path


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_case_table(snap_compare, steady_db: Path, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(ReviewApp(steady_db), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_case_view(snap_compare, steady_db: Path, review_job: ReviewJob, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    async def open_case(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        screen = pilot.app.screen
        screen.query_one("DataTable").move_cursor(row=[c.uid for c in screen.shown].index(review_job.original))
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(ReviewApp(steady_db), terminal_size=size, run_before=open_case)
