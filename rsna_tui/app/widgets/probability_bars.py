"""The 14 probabilities of one case as bars, each against its truth; or the overlay legend.

A bar is green where the truth is 1, red where it is 0 and grey without truth; the mark after the
value is ``●`` for a true 1, ``·`` for a true 0. The threshold (0.5) is drawn as ``│`` on the track,
so a false negative is a short green bar, a false positive a long red one.
"""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.labels import LABEL_COLUMNS
from rsna_tui.review.cases import Case
from rsna_tui.review.render import legend
from rsna_tui.review.table import abbreviate

NAME_WIDTH = 14


def bars(case: Case, width: int) -> Text:
    """One line per column: name, bar, probability, truth mark."""
    track = max(4, width - NAME_WIDTH - 8)
    text = Text(no_wrap=True, overflow="crop")
    for i, column in enumerate(LABEL_COLUMNS):
        probability = case.probabilities[i]
        truth = None if case.truth is None else case.truth[i]
        colour = "grey62" if truth is None else ("green3" if truth else "red3")
        filled = round(probability * track)
        middle = track // 2
        cells = ["█" if x < filled else ("│" if x == middle else "·") for x in range(track)]
        name = abbreviate(column)[:NAME_WIDTH].ljust(NAME_WIDTH)
        text.append(name, style="bold" if truth else "")
        text.append("".join(cells[:filled]), style=colour)
        text.append("".join(cells[filled:]), style="grey37")
        text.append(f" {probability:.2f}")
        text.append(" ●" if truth else (" ·" if truth == 0 else "  "), style=colour)
        if i < len(LABEL_COLUMNS) - 1:
            text.append("\n")
    return text


def legend_text() -> Text:
    text = Text(no_wrap=True, overflow="crop")
    for n, (name, (r, g, b)) in enumerate(legend()):
        text.append("██ ", style=f"rgb({r},{g},{b})")
        text.append(name + ("\n" if n < len(legend()) - 1 else ""))
    return text


class ProbabilityBars(Static):
    """The bars of one case (``show_legend`` swaps in the colour legend of the overlays)."""

    DEFAULT_CSS = "ProbabilityBars { height: auto; }"

    def __init__(self, case: Case, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.case = case
        self.show_legend = False

    def render(self) -> Text:
        return legend_text() if self.show_legend else bars(self.case, self.content_size.width or 36)
