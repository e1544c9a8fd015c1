"""Write the README's screenshots: the Jobs and Job-detail screens on ``jobs.db.example``.

    .venv/bin/python docs/screenshots.py        (or: make screenshots)

Textual's own SVG export of the real app, opened read-only on the example database, so that the
pictures follow the code; rerun after changing a screen or the example database.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SIZE = (110, 32)
#: The job whose detail is shown: the stage-2 training (train3d) of the demo run, 75 epochs of curves.
DETAIL_JOB = 6


async def shoot() -> None:
    from rsna_tui.app.app import RsnaApp
    from rsna_tui.workspace import Workspace

    os.chdir(REPO)  # the header shows the database as given: a relative path, not this machine's
    app = RsnaApp(Workspace(REPO), Path("jobs.db.example"), readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        while not app.loaded.is_set():
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        app.save_screenshot("jobs.svg", path=str(REPO / "docs"))
        await app.run_action(f"open_job({DETAIL_JOB})")
        while not getattr(app.screen, "loads", 0):
            await pilot.pause(0.05)
        await pilot.pause(1.0)
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        app.save_screenshot("job-detail.svg", path=str(REPO / "docs"))
    print("wrote docs/jobs.svg and docs/job-detail.svg")


if __name__ == "__main__":
    asyncio.run(shoot())
