"""Live curves of a job's metrics (plotext), with a metric picker, EMA smoothing, log-y and a time axis.

Points arrive in batches (``add_points``); the plot is redrawn only when a plotted metric got new
points or a toggle changed. Steps are the x axis by default (epochs); ``x`` switches to hours since
the first point, for multi-day runs.
"""
from __future__ import annotations

import math

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import SelectionList, Static
from textual_plotext import PlotextPlot

#: Shown first when a job reports them (the training questions: is it learning, is it overfitting).
PREFERRED = ("train_loss", "val_loss", "ema_pseudo_dice", "pseudo_dice", "score")
SMOOTHING = 0.8


def thin(xs: list[float], ys: list[float], most: int) -> tuple[list[float], list[float]]:
    """At most ``most`` points, evenly taken, the last always kept: a plot cannot show more
    points than its braille dots across, and plotext's drawing time grows with the points."""
    if len(xs) <= most:
        return xs, ys
    step = len(xs) / most
    keep = sorted({int(i * step) for i in range(most)} | {len(xs) - 1})
    return [xs[i] for i in keep], [ys[i] for i in keep]


def ema(values: list[float], beta: float = SMOOTHING) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing)."""
    out, mean = [], 0.0
    for i, value in enumerate(values, start=1):
        mean = beta * mean + (1 - beta) * value
        out.append(mean / (1 - beta**i))
    return out


class CurvePanel(Horizontal):
    """Picker on the left (Space toggles a metric), the plot on the right."""

    BINDINGS = [
        Binding("e", "toggle('smooth')", "EMA"),
        Binding("y", "toggle('logy')", "Log-y"),
        Binding("x", "toggle('hours')", "Hours"),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        #: ``{name: [(step, value, t)]}`` in arrival order.
        self.series: dict[str, list[tuple[float | None, float, float]]] = {}
        self.options = {"smooth": False, "logy": False, "hours": False}
        #: What the last redraw plotted: ``{name: (xs, ys)}``.
        self.plotted: dict[str, tuple[list[float], list[float]]] = {}

    def compose(self) -> ComposeResult:
        yield SelectionList[str](id="metric-picker")
        with Vertical():
            yield PlotextPlot(id="curve-plot")
            yield Static("", id="curve-status")

    @property
    def picker(self) -> SelectionList[str]:
        return self.query_one("#metric-picker", SelectionList)

    def selected(self) -> list[str]:
        return list(self.picker.selected)

    def add_points(self, points: dict[str, list[tuple[float | None, float, float]]]) -> None:
        """New points per metric; new metrics join the picker (the preferred ones pre-selected)."""
        if not points:
            return
        new = [name for name in points if name not in self.series]
        for name, values in points.items():
            self.series.setdefault(name, []).extend(values)
        if new:
            picker = self.picker
            first = not picker.option_count
            for name in sorted(new, key=lambda n: (n not in PREFERRED, PREFERRED.index(n) if n in PREFERRED else 0, n)):
                picker.add_option((name, name, False))
            if first or not picker.selected:
                self._default_selection()
        if new or set(points) & set(self.selected()):
            self.redraw()

    def _default_selection(self) -> None:
        picker = self.picker
        curves = [n for n, v in self.series.items() if len(v) > 1]
        wanted = [n for n in ("train_loss", "val_loss") if n in curves] or \
            [n for n in PREFERRED if n in curves][:1] or sorted(curves)[:1] or sorted(self.series)[:1]
        for name in wanted:
            picker.select(name)

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        event.stop()
        self.redraw()

    def action_toggle(self, option: str) -> None:
        self.options[option] = not self.options[option]
        self.redraw()

    def redraw(self) -> None:
        plot = self.query_one("#curve-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        names = self.selected()
        start = min((p[2] for n in names for p in self.series.get(n, [])[:1]), default=0.0)
        hours, logy = self.options["hours"], self.options["logy"]
        drawn = []
        self.plotted = {}  # every point of each curve (what is drawn may be thinned to the width)
        for name in names:
            points = self.series.get(name, [])
            xs = [(t - start) / 3600 if hours else (step if step is not None else i) for i, (step, _, t) in enumerate(points)]
            ys = [v for _, v, _ in points]
            if self.options["smooth"]:
                ys = ema(ys)
            if logy:
                kept = [(x, y) for x, y in zip(xs, ys) if y > 0 and math.isfinite(y)]
                xs, ys = [x for x, _ in kept], [y for _, y in kept]
            if not xs:
                continue
            self.plotted[name] = (xs, ys)
            xs, ys = thin(xs, ys, max(2, 2 * plot.size.width or 200))
            if len(xs) == 1:
                plt.scatter(xs, ys, label=name, marker="dot")
            else:
                plt.plot(xs, ys, label=name, marker="braille")
            drawn.append((name, len(points), points[-1][1]))
        if logy:
            plt.yscale("log")
        plt.xlabel("hours" if hours else "step")
        plt.title(", ".join(n for n, _, _ in drawn) if drawn else "no metric selected (Space in the list)")
        plot.refresh()
        flags = [f for f, on in (("EMA", self.options["smooth"]), ("log-y", logy), ("x=hours", hours)) if on]
        last = "  ".join(f"{n}={v:.4g} ({c} pts)" for n, c, v in drawn)
        self.query_one("#curve-status", Static).update((" ".join(f"[{f}]" for f in flags) + " " + last).strip())
