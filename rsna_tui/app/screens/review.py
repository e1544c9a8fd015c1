"""The review screen: a predict job's cases against the truth, sorted by error; Enter opens one.

The job's score and column AUCs head the screen when it has a truth. Keys: ``s`` sort order, ``f``
filter (false positives / negatives, fallbacks, failed), ``m`` modality, ``r`` reload, Enter the
case view (``rsna_tui.app.screens.review_case``). The store is read in a thread worker with a
connection of its own (sqlite connections belong to one thread), so a large job never freezes the UI.
"""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from rsna_tui.jobs.store import Store, StoreError
from rsna_tui.review.cases import Case, ReviewError, ReviewJob, load_review
from rsna_tui.review.table import FILTER_NAMES, FILTERS, HEADERS, SORTS, View, abbreviate, row_cells, select


#: Narrow headers and widths, so that 80 columns show series to error and 120 the whole row.
SHORT_HEADERS = {"p(present)": "p", "error": "|err|", "seconds": "s", "modality": "mod"}
COLUMN_WIDTHS = {"top location": 12, "true locations": 24, "fallback": 12}


class ReviewLoaded(Message):
    def __init__(self, review: ReviewJob | None, error: str = "") -> None:
        super().__init__()
        self.review, self.error = review, error


def heading(review: ReviewJob) -> Text:
    """Job line, then the score and the defined column AUCs (worst first)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"predict job {review.job.id} ", style="bold")
    text.append(f"  {review.job.status}  {len(review.cases)} series")
    if review.score is not None:
        text.append(f"  score {review.score:.3f}", style="bold")
    if review.aucs:
        text.append("\nAUC ")
        for name, auc in sorted(review.aucs.items(), key=lambda item: item[1]):
            style = "red" if auc < 0.5 else ("yellow" if auc < 0.75 else "green")
            text.append(" ")
            text.append(abbreviate(name), style="dim")
            text.append(" ")
            text.append(f"{auc:.2f}", style=style)
            text.append(" ")
    elif not review.has_truth:
        text.append("\nno truth for these series: no error, no AUC", style="dim")
    return text


class ReviewScreen(Screen):
    """Case table of one predict job (``job=None``: the latest with predictions)."""

    BINDINGS = [
        Binding("s", "cycle_sort", "Sort"),
        Binding("f", "cycle_filter", "Filter"),
        Binding("m", "cycle_modality", "Modality"),
        Binding("r", "reload", "Reload"),
        Binding("escape", "back", "Back"),
    ]
    DEFAULT_CSS = """
    ReviewScreen #review-heading { height: auto; max-height: 3; padding: 0 1; }
    ReviewScreen #review-view { height: 1; padding: 0 1; color: $text-muted; }
    ReviewScreen DataTable { height: 1fr; }
    """

    def __init__(self, db_path: Path | str | None = None, job: int | str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._db_path = Path(db_path) if db_path else None  # None: the app's (``app.db_path``), as a mode
        self.job_ref = job
        self.review: ReviewJob | None = None
        self.view = View()
        self.shown: list[Case] = []

    def compose(self) -> ComposeResult:
        yield Static("loading…", id="review-heading")
        yield Static("", id="review-view")
        table: DataTable = DataTable(id="review-cases", cursor_type="row", zebra_stripes=True)
        for header in HEADERS:
            table.add_column(SHORT_HEADERS.get(header, header), width=COLUMN_WIDTHS.get(header))
        yield table
        yield Footer()

    @property
    def db_path(self) -> Path:
        return self._db_path or Path(self.app.db_path)  # type: ignore[attr-defined]

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="review-load")
    def load(self) -> None:
        try:
            with Store(self.db_path, readonly=True) as store:
                self.post_message(ReviewLoaded(load_review(store, self.job_ref)))
        except (ReviewError, StoreError, OSError) as exc:  # a missing, locked or newer database: say so
            self.post_message(ReviewLoaded(None, str(exc)))

    def on_review_loaded(self, message: ReviewLoaded) -> None:
        if message.review is None:
            self.query_one("#review-heading", Static).update(Text(message.error, style="red"))
            return
        self.review = message.review
        self.job_ref = message.review.job.id
        self.query_one("#review-heading", Static).update(heading(message.review))
        self.fill()

    def fill(self) -> None:
        """Show the cases the view selects, keeping the cursor on the same case when it stays."""
        if self.review is None:
            return
        table = self.query_one(DataTable)
        current = self.shown[table.cursor_row].uid if self.shown and 0 <= table.cursor_row < len(self.shown) else None
        self.shown = select(self.review.cases, self.view)
        table.clear()
        for case in self.shown:
            table.add_row(*row_cells(case), key=case.uid)
        if current in {c.uid for c in self.shown}:
            table.move_cursor(row=[c.uid for c in self.shown].index(current))
        modality = f", {self.view.modality}" if self.view.modality else ""
        self.query_one("#review-view", Static).update(
            f"{len(self.shown)} of {len(self.review.cases)}: {FILTER_NAMES[self.view.filter]}{modality}, "
            f"by {self.view.sort}   s sort  f filter  m modality  enter open")

    def _replace(self, **changes: str) -> None:
        values = {"filter": self.view.filter, "modality": self.view.modality, "sort": self.view.sort, **changes}
        self.view = View(values["filter"], values["modality"], values["sort"])
        self.fill()

    def action_cycle_sort(self) -> None:
        self._replace(sort=SORTS[(SORTS.index(self.view.sort) + 1) % len(SORTS)])

    def action_cycle_filter(self) -> None:
        self._replace(filter=FILTERS[(FILTERS.index(self.view.filter) + 1) % len(FILTERS)])

    def action_cycle_modality(self) -> None:
        if self.review is None:
            return
        choices = ["", *sorted({c.modality for c in self.review.cases if c.modality})]
        position = choices.index(self.view.modality) if self.view.modality in choices else 0
        self._replace(modality=choices[(position + 1) % len(choices)])

    def action_reload(self) -> None:
        self.load()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if self.review is None or event.row_key.value is None:
            return
        self.open_case(self.review.case(event.row_key.value))

    @work(thread=True, exclusive=True, exit_on_error=False, group="review-case")
    def open_case(self, case: Case) -> None:
        from rsna_tui.app.screens.review_case import CaseScreen, open_viewer  # numpy / nibabel on first use

        try:
            viewer = open_viewer(case)
        except Exception as exc:  # a case without review files: say why, keep the table
            self.app.call_from_thread(self.notify, str(exc), title=case.short, severity="error", timeout=8)
            return
        self.app.call_from_thread(self.app.push_screen, CaseScreen(case, viewer))
