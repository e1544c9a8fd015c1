"""The review screens in a real Textual app (Pilot), on the real tiny predict job.

``ReviewApp`` (``rsna-tui review --tui``) opens the review screen on a jobs database, as the app shell
does with ``app.db_path``. Opening a case shows its three planes; keys scroll, jump and toggle.
"""
from __future__ import annotations

import asyncio

import numpy as np
from textual.app import App
from textual.widgets import DataTable

from engine.labels import ANEURYSM_PRESENT
from rsna_tui.app.review_app import ReviewApp
from rsna_tui.app.screens.review import ReviewScreen
from rsna_tui.app.screens.review_case import CaseScreen
from rsna_tui.app.widgets.probability_bars import ProbabilityBars
from rsna_tui.app.widgets.slice_view import SliceView, detect_graphics, half_block_rows
from rsna_tui.review.render import BOX_COLOUR, POINT_COLOUR
from tests.app.review_job import ReviewJob
from tests.app.test_review_table import expected


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    """Let workers finish and their messages be handled."""
    for _ in range(3):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def table_uids(app: App) -> list[str]:
    table = app.screen.query_one(DataTable)
    return [str(table.coordinate_to_cell_key((row, 0)).row_key.value) for row in range(table.row_count)]


def test_table_sorting_filter_and_opening_a_case(review_job: ReviewJob) -> None:
    frame = expected(review_job)

    async def scenario() -> None:
        app = ReviewApp(review_job.db)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, ReviewScreen)
            assert table_uids(app) == list(frame.sort_values("abs_error", ascending=False, kind="stable").index)
            await pilot.press("f", "f")  # all -> false positives -> false negatives
            negatives = frame[(frame["truth"] == 1) & (frame[ANEURYSM_PRESENT] < 0.5)]
            assert set(table_uids(app)) == set(negatives.index) and screen.view.filter == "fn"
            await pilot.press("f", "f", "f", "s")  # fallbacks, failed, all; then by probability
            assert table_uids(app) == list(frame.sort_values(ANEURYSM_PRESENT, ascending=False).index)
            await pilot.press("m")
            assert screen.view.modality == "CTA" and len(table_uids(app)) == (frame["modality"] == "CTA").sum()
            await pilot.press("m", "m", "m", "m", "s", "s", "s", "s")  # all modalities, by error again
            target = review_job.original
            row = table_uids(app).index(target)
            screen.query_one(DataTable).move_cursor(row=row)
            await pilot.press("enter")
            await settle(pilot)
            case_screen = app.screen
            assert isinstance(case_screen, CaseScreen) and case_screen.case.uid == target
            views = list(case_screen.query(SliceView))
            assert sorted(v.plane for v in views) == ["axial", "coronal", "sagittal"]
            for view in views:
                assert view.picture is not None and view.picture.rgb.size
                assert any(line.cell_length for line in view._lines)
            main = case_screen.query_one("#case-main", SliceView)
            assert main.plane == "axial" and main.border_title.startswith("axial")
            # it opens on the first truth point: the ring is drawn in the enlarged plane
            assert np.all(main.picture.rgb == POINT_COLOUR, axis=-1).any()
            k = case_screen.viewer.index("axial")
            await pilot.press("up")
            assert case_screen.viewer.index("axial") == k + 1
            assert main.border_title.startswith(f"axial {k + 2}/")
            await pilot.press("down", "down")
            assert case_screen.viewer.index("axial") == k - 1
            assert np.all(main.picture.rgb == BOX_COLOUR, axis=-1).any()
            await pilot.press("b")
            assert not np.all(main.picture.rgb == BOX_COLOUR, axis=-1).any()
            await pilot.press("t")
            points = len(case_screen.viewer.case.points)
            assert f"truth point {min(2, points)}/{points}" in case_screen.message_text
            await pilot.press("tab")
            assert main.plane == "coronal" and {v.plane for v in views} == {"axial", "coronal", "sagittal"}
            await pilot.press("w")
            assert case_screen.viewer.window.name == "brain"
            await pilot.press("n")
            assert main.picture.letters["left"] == "L" and "neurological" in case_screen.message_text
            await pilot.press("g")
            assert case_screen.query_one(ProbabilityBars).show_legend
            await pilot.press("escape")
            assert isinstance(app.screen, ReviewScreen)

    asyncio.run(scenario())


def test_palette_command_opens_a_job(review_job: ReviewJob) -> None:
    async def scenario() -> None:
        app = ReviewApp(review_job.db, job=42)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("ctrl+p")
            await pilot.press(*f"review job {review_job.job_id}")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, ReviewScreen) and app.screen.job_ref == review_job.job_id
            assert len(table_uids(app)) == 10

    asyncio.run(scenario())


def test_an_unknown_job_is_said_on_the_screen(review_job: ReviewJob) -> None:
    async def scenario() -> None:
        app = ReviewApp(review_job.db, job=42)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            heading = str(app.screen.query_one("#review-heading").render())
            assert "no job 42" in heading

    asyncio.run(scenario())


def test_half_blocks_and_graphics_off_by_default(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rgb = np.zeros((3, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 0] = (0, 0, 255)
    rgb[2, 1] = (0, 255, 0)
    rows = half_block_rows(rgb)
    assert len(rows) == 2  # three pixel rows: two cell rows, the last padded
    first = rows[0][0]
    assert first.text == "▀" and first.style.color.triplet == (255, 0, 0) and first.style.bgcolor.triplet == (0, 0, 255)
    assert rows[1][-1].style.color.triplet == (0, 255, 0) and rows[1][-1].style.bgcolor.triplet == (0, 0, 0)
    monkeypatch.delenv("RSNA_TUI_GRAPHICS", raising=False)
    assert detect_graphics() is None  # off: nothing is asked of the terminal
    monkeypatch.setenv("RSNA_TUI_GRAPHICS", "auto")
    assert detect_graphics() is None  # not a terminal (pytest captures stdout): half blocks
    assert detect_graphics("off") is None


def test_graphics_renderer_gets_the_picture_with_its_letters(review_job: ReviewJob, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The opt-in path (what ``--graphics auto`` picks on a Kitty / Sixel terminal): a textual-image
    widget is handed the plane with its letters drawn in the margin."""
    from rsna_tui.app.widgets import slice_view

    monkeypatch.setattr(slice_view, "_graphics", "tgp")

    async def scenario() -> None:
        app = ReviewApp(review_job.db)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("enter")
            await settle(pilot)
            main = app.screen.query_one("#case-main", SliceView)
            image = main._image.image
            height, width = main.picture.rgb.shape[:2]
            assert image.size == (width + 60, height + 60)  # the picture inside a 30-pixel letter margin
            before = main.viewer.index("axial")
            await pilot.press("up")
            assert main.viewer.index("axial") == before + 1 and main._image.image is not image

    asyncio.run(scenario())


def test_the_app_shell_opens_the_review_screen_on_key_6(review_job: ReviewJob) -> None:
    from rsna_tui.app.app import RsnaApp
    from rsna_tui.workspace import Workspace

    async def scenario() -> None:
        app = RsnaApp(Workspace(review_job.workspace), review_job.db, readonly=True, gpu_sampler=lambda: None)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.5)
            await pilot.press("6")
            for _ in range(20):  # the shell's poll worker never ends: wait for the table, not for workers
                await pilot.pause(0.25)
                if isinstance(app.screen, ReviewScreen) and app.screen.shown:
                    break
            assert isinstance(app.screen, ReviewScreen) and app.screen.db_path == review_job.db
            assert len(table_uids(app)) == 10

    asyncio.run(scenario())
