"""Command-palette entries "Review job N", one per predict job with predictions, newest first.

Any app with a ``db_path`` attribute (the shell, ``ReviewApp``) lists this provider in its ``COMMANDS``.
The job list is read when the palette opens, with a read-only connection of its own, closed at once.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from textual.command import DiscoveryHit, Hit, Hits, Provider

from rsna_tui.jobs.store import Store


class ReviewCommands(Provider):
    """``Review job N`` opens the review screen of predict job N."""

    async def startup(self) -> None:
        self.jobs: list[tuple[int, str]] = []
        path = Path(getattr(self.app, "db_path", ""))
        if not path.is_file():
            return
        with Store(path, readonly=True) as store:
            for job in store.list_jobs(stage="predict", limit=50):
                if "predictions" in store.artefacts(job.id):
                    self.jobs.append((job.id, f"{job.status}, {store.count_case_predictions(job.id)} series"))

    def _open(self, job_id: int) -> None:
        from rsna_tui.app.screens.review import ReviewScreen

        self.app.push_screen(ReviewScreen(Path(self.app.db_path), job_id))  # type: ignore[attr-defined]

    async def discover(self) -> Hits:
        for job_id, help_text in self.jobs:
            yield DiscoveryHit(f"Review job {job_id}", partial(self._open, job_id), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for job_id, help_text in self.jobs:
            name = f"Review job {job_id}"
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self._open, job_id), help=help_text)
