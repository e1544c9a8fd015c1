"""A stand-alone app around the review screen: ``rsna-tui review [JOB] --tui``.

The full app shell shows the same screen among the others; this one opens straight on one predict
job's case table, for a user who only wants to look at predictions (and for tests). Kitty / Sixel
graphics are asked for before the app starts (``--graphics auto``), as the terminal cannot be
queried once Textual runs.
"""
from __future__ import annotations

from pathlib import Path

from textual.app import App

from rsna_tui.app.review_commands import ReviewCommands
from rsna_tui.app.screens.review import ReviewScreen


class ReviewApp(App):
    """Opens the review screen of job ``job`` (None: the latest predict job) in ``db_path``."""

    TITLE = "rsna-tui review"
    COMMANDS = App.COMMANDS | {ReviewCommands}

    def __init__(self, db_path: Path | str, job: int | str | None = None) -> None:
        super().__init__()
        self.db_path, self.job = Path(db_path), job

    def on_mount(self) -> None:
        self.push_screen(ReviewScreen(self.db_path, self.job))
