"""Launch form: the CLI's checks and messages, nothing submitted on a bad value, and the preview is exact."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from rsna_tui.app.app import RsnaApp
from rsna_tui.app.screens.launch import LaunchScreen
from rsna_tui.workspace import Workspace
from tests.app.conftest import REPO, wait_for
from tests.app.tui.conftest import until

pytestmark = pytest.mark.anyio


async def open_form(app, pilot, stage: str) -> LaunchScreen:
    await pilot.press("2")
    screen = await until(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen)
    screen.choose_stage(stage)
    await until(pilot, lambda: screen.form and screen.form.stage.name == stage and screen.form.is_mounted, what="the form")
    await pilot.pause()
    return screen


async def type_into(pilot, screen, name: str, text: str) -> None:
    box = screen.query_one(f"#param-{name}")
    box.value = ""
    box.focus()
    await pilot.press(*text)


async def test_a_bad_value_shows_the_cli_message_and_submits_nothing(manager, make_app, cli) -> None:
    expected = cli("run", "--stage", "test-sleep", "--set", "steps=abc", check=False)
    assert expected.returncode == 2
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_form(app, pilot, "test-sleep")
        await type_into(pilot, screen, "steps", "abc")
        field_error = str(screen.query_one("#error-steps").render())
        assert "steps: 'abc' is not a valid int" in field_error
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        shown = str(screen.query_one("#launch-error").render())
        assert shown.splitlines()[0] == expected.stderr.strip()
        assert "nothing was submitted" in shown
        assert str(screen.query_one("#error-steps").render()) == expected.stderr.strip().removeprefix("error: ")
    assert manager.store.count_jobs() == 0


async def test_the_preview_run_in_a_shell_gives_the_same_job(manager, make_app, job_env) -> None:
    first = wait_for(manager, manager.submit("test-sleep", overrides=["seconds=0.1"]).id, lambda j: j.terminal)
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_form(app, pilot, "test-sleep")
        await type_into(pilot, screen, "seconds", "0.3")
        await type_into(pilot, screen, "steps", "3")
        after = screen.query_one("#after-list")
        await until(pilot, lambda: after.option_count, what="jobs to run after")
        after.select(first.id)
        await pilot.pause()
        preview = str(screen.query_one("#preview").render()).removeprefix("$ ")
        assert "--set seconds=0.3 --set steps=3" in preview and f"--after {first.id}" in preview
        await pilot.press("ctrl+s")
        await until(pilot, lambda: len(app.jobs) == 2, what="the submitted job")
    env = dict(job_env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{job_env['PATH']}")
    # the planner behind `rsna-tui run` finds the app's job equal (same parameters, same --after):
    # the preview's plan waits for it or reuses it instead of submitting a second one
    result = subprocess.run(["bash", "-c", preview + " --dry-run --json"], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    planned = json.loads(result.stdout)["steps"][-1]
    from_app = manager.store.list_jobs(limit=1)[0]
    assert planned["action"] in ("wait", "reuse") and planned["job_id"] == from_app.id
    assert planned["params"] == from_app.params == {"seconds": 0.3, "steps": 3, "fail": False}
    assert from_app.depends_on == [first.id] and from_app.stage == "test-sleep" and from_app.profile == "tiny"


async def test_read_only_database_refuses_actions_and_says_why(tmp_path) -> None:
    example = tmp_path / "jobs.db.example"
    shutil.copy(REPO / "jobs.db.example", example)
    with closing(sqlite3.connect(f"file:{example}?mode=ro", uri=True)) as db:
        n_jobs = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    before = example.read_bytes()
    app = RsnaApp(Workspace(tmp_path), example, readonly=True)
    async with app.run_test(size=(80, 24)) as pilot:
        assert n_jobs >= 10  # a whole demo pipeline
        await until(pilot, lambda: len(app.jobs) == n_jobs, what="the example's jobs")
        for key in ("c", "r", "R"):
            await pilot.press(key)
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert len([m for m in messages if m.startswith("read-only: --db opens")]) >= 3
        screen = await open_form(app, pilot, "convert")
        await pilot.press("ctrl+s")
        assert "read-only" in str(screen.query_one("#launch-error").render())
    assert example.read_bytes() == before
    assert not (tmp_path / "jobs").exists()
