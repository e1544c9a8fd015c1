"""Datasets and Pipeline screens over the planner's modules (skipped while those are not in the build)."""
from __future__ import annotations

from pathlib import Path

import pytest

from rsna_tui.app.widgets.confirm import Confirm
from rsna_tui.workspace import Workspace
from tests.app.tui.conftest import until

pytestmark = pytest.mark.anyio


async def test_register_a_folder_and_see_its_summary(make_app, workspace: Path, demo_cohort: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("rsna_tui.datasets")
    empty = tmp_path / "not-kaggle"
    empty.mkdir()
    with pytest.raises(Exception) as refused:
        datasets.add_dataset(Workspace(tmp_path / "other-ws"), "bad", str(empty))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        table = await until(pilot, lambda: app.screen.query("#datasets-table") and app.screen.query_one("#datasets-table"))
        await pilot.press("a", *f"bad {empty}", "enter")
        await until(pilot, lambda: any(str(refused.value) in n.message for n in app._notifications),
                    what="the Kaggle reader's message, as it is")
        box = app.screen.query_one("#register")
        box.value = ""
        await pilot.press(*f"mine {demo_cohort}", "enter")
        await until(pilot, lambda: "mine" in {str(k.value) for k in table.rows}, what="the registered dataset")
        table.move_cursor(row=[str(k.value) for k in table.rows].index("mine"))
        summary = app.screen.query_one("#dataset-summary")
        await until(pilot, lambda: str(summary.render()).startswith("mine\n"), what="its summary")
    assert "mine" in [d if isinstance(d, str) else getattr(d, "name", d.get("name") if isinstance(d, dict) else d)
                      for d in datasets.list_datasets(Workspace(workspace))]


async def test_run_up_to_here_submits_the_planned_jobs(manager, make_app) -> None:
    planner = pytest.importorskip("rsna_tui.jobs.planner")
    expected = [s.stage for s in planner.plan(manager, "convert", "tiny", ["dataset=demo"]).steps if s.action == "run"]
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: app.screen.query("#chain-table"))
        await pilot.press("down")  # convert
        plan_view = app.screen.query_one("#plan-view")
        await until(pilot, lambda: str(plan_view.render()).startswith("plan for convert"), what="the dry-run plan")
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, Confirm))
        await pilot.press("y")
        await until(pilot, lambda: len(app.jobs) == len(expected), what=f"jobs {expected}")
    assert sorted(j.stage for j in manager.store.list_jobs()) == sorted(expected)
