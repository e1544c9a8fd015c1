"""The command palette (Ctrl+P): every screen and action of the app, by name.

Built from the same tables as the keys (the app's ``SCREENS``, the stage table, the statuses), so
a new screen or stage appears here without a line of its own. Themes come from Textual's own
system commands, which stay in ``App.COMMANDS`` beside this provider.
"""
from __future__ import annotations

import re
from functools import partial
from typing import Iterator

from textual.command import DiscoveryHit, Hit, Hits, Provider

from rsna_tui.jobs.store import STATUSES


def _commands(app: object) -> Iterator[tuple[str, str, str]]:
    """``(name, action, help)`` of every palette command (actions run on the app)."""
    from rsna_tui.app.app import SCREENS
    from rsna_tui.jobs.stage_table import all_stages

    for entry in SCREENS:
        yield f"Open {entry.title} screen", f"switch_mode('{entry.mode}')", f"key {entry.key}: {entry.help}"
    for name, stage in all_stages().items():
        yield f"Launch stage {name}", f"launch('{name}')", stage.help
    yield "Show all jobs", "filter_jobs('', '')", "clear the quick filters of the Jobs screen"
    yield "Filter jobs: active", "filter_jobs('active', '')", "queued, starting or running"
    for status in STATUSES:
        yield f"Filter jobs by status {status}", f"filter_jobs('{status}', '')", "quick filter of the Jobs screen"
    for name in all_stages():
        yield f"Filter jobs by stage {name}", f"filter_jobs('', '{name}')", "quick filter of the Jobs screen"
    for verb, action in (("Cancel", "cancel"), ("Retry", "retry"), ("Resume", "resume"), ("Show log of", "log")):
        yield f"{verb} selected jobs", f"jobs_action('{action}')", "the marked jobs, else the one under the cursor"
    yield "Toggle bell when a job ends", "toggle_bell", "the terminal bell beside the toast"
    yield "Show keys", "help", "the key map of the current screen"


#: The score of "Open job N" when the query names an existing job: above any fuzzy match
#: (Textual's fuzzy scores are not bounded by 1).
EXACT = 1e9


class RsnaCommands(Provider):
    """Screens, launches, filters and job actions."""

    async def search(self, query: str) -> Hits:
        app = self.app
        number = re.search(r"\d+", query)
        if number and int(number.group()) in getattr(app, "jobs", {}):
            job_id = int(number.group())
            line = app.jobs[job_id]  # type: ignore[attr-defined]
            yield Hit(EXACT, f"Open job {job_id} ({line.stage}, {line.status})", partial(app.run_action, f"open_job({job_id})"),
                      help="its detail: curves, resources, log")
        matcher = self.matcher(query)
        for name, action, help_text in _commands(app):
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(app.run_action, action), text=name, help=help_text)

    async def discover(self) -> Hits:
        app = self.app
        for name, action, help_text in _commands(app):
            yield DiscoveryHit(name, partial(app.run_action, action), help=help_text)
