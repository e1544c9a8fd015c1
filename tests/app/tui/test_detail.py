"""Job detail on real jobs: the curves hold the job's points, live; resources, log, lineage, artefacts."""
from __future__ import annotations

import pytest

from rsna_tui.app.screens.detail import JobDetailScreen
from rsna_tui.app.widgets.curves import CurvePanel
from rsna_tui.app.widgets.log_tail import LogTail
from rsna_tui.app.widgets.resources import ResourcePanel
from tests.app.conftest import wait_for
from tests.app.tui.conftest import until

pytestmark = pytest.mark.anyio


async def test_curves_show_the_points_of_a_finished_job(manager, make_app) -> None:
    job = wait_for(manager, manager.submit("test-train", overrides=["epochs=6"]).id, lambda j: j.terminal)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: job.id in app.jobs)
        await pilot.press("enter")
        screen = await until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.loads and app.screen)
        curves = screen.query_one(CurvePanel)
        assert curves.selected() == ["train_loss", "val_loss"]
        for name in ("train_loss", "val_loss"):
            stored = manager.store.metric_series(job.id, name)
            assert curves.plotted[name] == ([s for s, _ in stored], [v for _, v in stored])
        assert set(curves.series) == {"train_loss", "val_loss", "pseudo_dice", "ema_pseudo_dice", "lr", "epoch_time"}
        await pilot.press("e")  # EMA smoothing: bias-corrected, so the first point stays
        smoothed = curves.plotted["train_loss"][1]
        assert smoothed[0] == pytest.approx(1.0) and smoothed[-1] > 1.0 / 6
        await pilot.press("e", "y")  # log-y keeps the positive values
        assert curves.plotted["train_loss"][1] == [v for _, v in manager.store.metric_series(job.id, "train_loss")]
        await pilot.press("right_square_bracket", "right_square_bracket")  # tabs mount when first shown
        log = await until(pilot, lambda: screen.panel("log"), what="the log tab")
        assert isinstance(log, LogTail)
        await until(pilot, lambda: any("epoch 5: train_loss" in line for line in log.lines), what="the log lines")
        await pilot.press("right_square_bracket")
        params = await until(pilot, lambda: screen.panel("params"), what="the params tab")
        assert params.get_row("epochs")[:3] == ["epochs", "6", "int"]
        await pilot.press("right_square_bracket", "right_square_bracket")
        artefacts = await until(pilot, lambda: screen.panel("artefacts"), what="the artefacts tab")
        assert [str(k.value) for k in artefacts.rows] == ["checkpoint"]


async def test_curves_and_resources_follow_a_running_job(manager, make_app) -> None:
    job = manager.submit("test-train", overrides=["epochs=40", "seconds=0.1"])
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await app.run_action(f"open_job({job.id})")
        screen = await until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen)
        curves = screen.query_one(CurvePanel)
        first = await until(pilot, lambda: len(curves.series.get("train_loss", [])), what="first points")
        await until(pilot, lambda: len(curves.series["train_loss"]) > first + 3, what="more points while it runs")
        await pilot.press("right_square_bracket")
        resources = await until(pilot, lambda: screen.panel("resources"), what="the resources tab")
        assert isinstance(resources, ResourcePanel)
        await until(pilot, lambda: resources.samples, what="resource samples")
        assert all(s["rss_bytes"] > 0 for s in resources.samples)
        await until(pilot, lambda: screen.job and screen.job.status == "succeeded", timeout=60)
        await until(pilot, lambda: len(curves.series["train_loss"]) == 40, what="all 40 epochs")


async def test_lineage_lists_attempts_and_dependants(manager, make_app) -> None:
    first = wait_for(manager, manager.submit("test-sleep", overrides=["seconds=0.1", "fail=true"]).id, lambda j: j.terminal)
    second = wait_for(manager, manager.retry(first.id).id, lambda j: j.terminal)
    after = manager.submit("test-sleep", overrides=["seconds=0.1"], after=[second.id])
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await app.run_action(f"open_job({second.id})")
        screen = await until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.loads and app.screen)
        await pilot.press(*["right_square_bracket"] * 4)
        table = await until(pilot, lambda: screen.panel("lineage") and screen.panel("lineage").row_count and screen.panel("lineage"))
        rows = [tuple(str(c) for c in table.get_row_at(i)[:2]) for i in range(table.row_count)]
        assert ("attempt", str(first.id)) in rows and ("this attempt", str(second.id)) in rows
        assert ("waited for by", str(after.id)) in rows
