"""The case view: the 14 probabilities against the truth, and the three planes of the converted volume
with one enlarged.

Keys (the footer lists them): up / down one slice of the enlarged plane, page up / down ten, tab the
next plane enlarged, ``a`` jump to the strongest decoder-1 aneurysm response, ``t`` to the next truth
localizer point (all three planes follow: they cut through one cursor voxel), ``b`` / ``d`` / ``c`` /
``o`` toggle the stage-1 box, the decoder-1 aneurysm map, the decoder-2 vessel classes and the truth
points, ``g`` the colour legend instead of the bars, ``w`` the next window preset, ``[`` / ``]`` the
level, ``-`` / ``=`` the width, ``n`` radiological / neurological convention (the letters follow),
escape back to the table.
"""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from rsna_tui.app.widgets.probability_bars import ProbabilityBars
from rsna_tui.app.widgets.slice_view import SliceView
from rsna_tui.review.cases import Case
from rsna_tui.review.viewer import Viewer
from rsna_tui.review.volume import PLANES, CaseFilesError, load_case

OVERLAY_KEYS = {"box": "stage-1 box", "aneurysm": "decoder-1 aneurysm", "vessels": "decoder-2 vessels",
                "points": "truth points"}


def open_viewer(case: Case, convention: str = "radiological") -> Viewer:
    """Load a case's review files (any thread) into a viewer; CaseFilesError says what is missing."""
    if case.folder is None:
        raise CaseFilesError(f"case {case.uid} has no review folder (status {case.status}: {case.error})")
    return Viewer(load_case(case.folder), case.modality, convention=convention)


class CaseScreen(Screen):
    """One case: bars on the left, the enlarged plane and the two others on the right."""

    BINDINGS = [
        Binding("up", "scroll(1)", "Slice +", show=False),
        Binding("down", "scroll(-1)", "Slice -", show=False),
        Binding("pageup", "scroll(10)", "+10", show=False),
        Binding("pagedown", "scroll(-10)", "-10", show=False),
        Binding("tab", "next_plane", "Plane"),
        Binding("a", "strongest", "Aneurysm"),
        Binding("t", "truth_point", "Truth"),
        Binding("b", "toggle('box')", "Box", show=False),
        Binding("d", "toggle('aneurysm')", "Dec-1", show=False),
        Binding("c", "toggle('vessels')", "Vessels", show=False),
        Binding("o", "toggle('points')", "Points", show=False),
        Binding("g", "legend", "Legend"),
        Binding("w", "next_window", "Window"),
        Binding("n", "convention", "Convention", show=False),
        Binding("left_square_bracket", "level(-1)", "Level -", show=False),
        Binding("right_square_bracket", "level(1)", "Level +", show=False),
        Binding("minus", "width(-1)", "Width -", show=False),
        Binding("equals_sign", "width(1)", "Width +", show=False),
        Binding("escape", "back", "Back"),
    ]
    DEFAULT_CSS = """
    CaseScreen #case-side { width: 40; min-width: 30; }
    CaseScreen #case-title { height: auto; padding: 0 1; }
    CaseScreen ProbabilityBars { padding: 0 1; }
    CaseScreen #case-status { height: auto; padding: 0 1; color: $text-muted; }
    CaseScreen #case-planes { width: 1fr; }
    CaseScreen #case-main { height: 2fr; }
    CaseScreen #case-small { height: 1fr; }
    """

    def __init__(self, case: Case, viewer: Viewer, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.case = case
        self.viewer = viewer
        self.message_text = ""

    def compose(self) -> ComposeResult:
        others = [p for p in PLANES if p != self.viewer.plane]
        with Horizontal():
            with Vertical(id="case-side"):
                yield Static(self._title(), id="case-title")
                yield ProbabilityBars(self.case, id="case-bars")
                yield Static(self._status(), id="case-status")
            with Vertical(id="case-planes"):
                yield SliceView(self.viewer, self.viewer.plane, id="case-main", classes="enlarged")
                with Horizontal(id="case-small"):
                    yield SliceView(self.viewer, others[0], id="case-small-0")
                    yield SliceView(self.viewer, others[1], id="case-small-1")
        yield Footer()

    def _title(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(self.case.short, style="bold")
        text.append(f"  {self.case.modality or '?'}")
        truth = self.case.true_present
        if truth is not None:
            text.append(f"  truth {truth}", style="green" if truth else "")
        text.append(f"  p {self.case.present:.2f}")
        if self.case.has_fallback:
            text.append(f"\nfallback {'+'.join(x for x in (self.case.fallback, self.case.box_fallback) if x)}",
                        style="yellow")
        if self.case.slice_gap:
            text.append(f"\n{self.case.slice_gap}", style="yellow")
        if self.case.failed:
            text.append(f"\n{self.case.error or self.case.status}", style="red")
        return text

    def _status(self) -> Text:
        viewer = self.viewer
        assert viewer.window is not None
        shown = ", ".join(OVERLAY_KEYS[o] for o in OVERLAY_KEYS if o in viewer.overlays) or "no overlays"
        text = Text(f"{viewer.window.describe()}  {viewer.convention}\n{shown}", no_wrap=True, overflow="ellipsis")
        if self.message_text:
            text.append(f"\n{self.message_text}", style="italic")
        return text

    def redraw(self, message: str = "", only_main: bool = False) -> None:
        """Draw the views again (``only_main``: a scroll of the enlarged plane changes no other view,
        as they cut the cursor along other axes)."""
        self.message_text = message
        views = [self.query_one("#case-main", SliceView)] if only_main else list(self.query(SliceView))
        for view in views:
            view.redraw()
        self.query_one("#case-status", Static).update(self._status())

    # -- actions ----------------------------------------------------------------------------------

    def action_scroll(self, steps: int) -> None:
        self.viewer.scroll(steps)
        self.redraw(self.message_text, only_main=True)

    def action_next_plane(self) -> None:
        self.viewer.cycle_plane()
        others = [p for p in PLANES if p != self.viewer.plane]
        self.query_one("#case-main", SliceView).show(self.viewer, self.viewer.plane)
        self.query_one("#case-small-0", SliceView).show(self.viewer, others[0])
        self.query_one("#case-small-1", SliceView).show(self.viewer, others[1])

    def action_strongest(self) -> None:
        self.redraw(self.viewer.strongest())

    def action_truth_point(self) -> None:
        self.redraw(self.viewer.next_point())

    def action_toggle(self, overlay: str) -> None:
        shown = self.viewer.toggle(overlay)
        self.redraw(f"{OVERLAY_KEYS[overlay]} {'on' if shown else 'off'}")

    def action_legend(self) -> None:
        bars = self.query_one(ProbabilityBars)
        bars.show_legend = not bars.show_legend
        bars.refresh(layout=True)

    def action_next_window(self) -> None:
        self.redraw(f"window {self.viewer.next_window().describe()}")

    def action_level(self, steps: int) -> None:
        self.redraw(f"window {self.viewer.adjust(level_steps=steps).describe()}")

    def action_width(self, steps: int) -> None:
        self.redraw(f"window {self.viewer.adjust(width_steps=steps).describe()}")

    def action_convention(self) -> None:
        self.viewer.convention = "neurological" if self.viewer.convention == "radiological" else "radiological"
        self.redraw(f"{self.viewer.convention} convention")

    def action_back(self) -> None:
        self.app.pop_screen()
