"""One plane of a case in the terminal, with its orientation letters on all four sides.

Default renderer: Unicode half blocks ("▀", foreground = upper pixel, background = lower pixel), two
square-ish pixels per cell; it works over plain SSH, in tmux and in the browser of textual-serve. The
picture is drawn at the widget's cell size by ``rsna_tui.review.render`` (so box edges and point
markers survive any zoom) and turned into Rich segments here, one strip per row (Textual's line API).

Opt-in: the Kitty graphics protocol or Sixel through ``textual-image`` (full resolution, but needs
``allow-passthrough on`` in tmux and no textual-serve). Which one a terminal speaks must be asked
**before** the app starts (the terminal cannot be queried once Textual owns it): call
:func:`detect_graphics` first, with the user's option (``--graphics`` / ``RSNA_TUI_GRAPHICS``:
``off``, the default, or ``auto``); ``None`` means half blocks.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.app import ComposeResult
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from rsna_tui.review.render import Picture
from rsna_tui.review.viewer import Viewer

GRAPHICS_ENV = "RSNA_TUI_GRAPHICS"
GRAPHICS_CHOICES = ("off", "auto")
UPPER_HALF = "▀"
LETTER_STYLE = Style(color="bright_white", bold=True)

_graphics: str | None = None


def detect_graphics(option: str | None = None) -> str | None:
    """Ask the terminal for Kitty / Sixel support, once, before the app starts.

    ``option`` (else ``$RSNA_TUI_GRAPHICS``, else ``off``): ``off`` keeps half blocks without asking the
    terminal anything; ``auto`` imports ``textual-image``, whose import queries the terminal. Returns
    ``"tgp"`` (Kitty graphics protocol), ``"sixel"`` or ``None`` (half blocks), and remembers it for
    the :class:`SliceView` widgets created later.
    """
    global _graphics
    choice = (option or os.environ.get(GRAPHICS_ENV) or "off").lower()
    if choice not in GRAPHICS_CHOICES:
        raise ValueError(f"graphics {choice!r}: use one of {', '.join(GRAPHICS_CHOICES)}")
    _graphics = None
    if choice == "auto":
        from textual_image import renderable  # the import asks the terminal (must happen before App.run)

        _graphics = {"TGPImage": "tgp", "SixelImage": "sixel"}.get(renderable.Image.__name__)
    return _graphics


#: Styles by packed (upper RGB, lower RGB): building a Rich Style is most of the cost of a cell.
_styles: dict[int, Style] = {}
MAX_STYLES = 1 << 16


def _style(key: int) -> Style:
    style = _styles.get(key)
    if style is None:
        if len(_styles) >= MAX_STYLES:
            _styles.clear()
        top, bottom = key >> 24, key & 0xFFFFFF
        style = _styles[key] = Style(color=Color.from_rgb(top >> 16, (top >> 8) & 255, top & 255),
                                     bgcolor=Color.from_rgb(bottom >> 16, (bottom >> 8) & 255, bottom & 255))
    return style


def half_block_rows(rgb: np.ndarray) -> list[list[Segment]]:
    """Cells of an RGB picture (height, width, 3): two pixel rows per cell row, runs of equal cells
    merged into one segment."""
    if rgb.shape[0] % 2:
        rgb = np.concatenate([rgb, np.zeros((1, *rgb.shape[1:]), dtype=rgb.dtype)])
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = (packed[0::2] << 24) | packed[1::2]  # (cell rows, cells): upper pixel, lower pixel
    rows = []
    for line in keys:
        starts = np.flatnonzero(np.r_[True, line[1:] != line[:-1]])
        lengths = np.diff(np.r_[starts, len(line)])
        rows.append([Segment(UPPER_HALF * int(n), _style(int(line[i]))) for i, n in zip(starts, lengths)])
    return rows


class SliceView(Widget):
    """One plane (axial, coronal or sagittal) of a :class:`Viewer`'s case, letters around it."""

    DEFAULT_CSS = """
    SliceView { border: round $primary-darken-2; height: 1fr; width: 1fr; }
    SliceView.enlarged { border: round $accent; }
    """

    def __init__(self, viewer: Viewer, plane: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.viewer = viewer
        self.plane = plane
        self.picture: Picture | None = None
        self._lines: list[Strip] = []
        self._image: Any = None

    def compose(self) -> ComposeResult:
        if _graphics is not None:
            from textual_image.widget import Image

            self._image = Image()
            self._image.styles.width, self._image.styles.height = "1fr", "1fr"
            yield self._image
        else:
            yield from ()

    def show(self, viewer: Viewer, plane: str) -> None:
        """Point the view at another viewer or plane and redraw."""
        self.viewer, self.plane = viewer, plane
        self.redraw()

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Draw the plane again (after a scroll, a window or overlay change, a resize)."""
        size = self.content_size
        width, height = size.width - 2, size.height - 2
        count = self.viewer.case.slice_count(self.plane)
        self.border_title = f"{self.plane} {self.viewer.index(self.plane) + 1}/{count}"
        if width < 2 or height < 1:
            self._lines, self.picture = [], None
            self.refresh()
            return
        if self._image is not None:
            self._draw_graphics(width, height)
        else:
            self._draw_cells(size, width, height)
        self.refresh()

    def _draw_cells(self, size: Size, width: int, height: int) -> None:
        self.picture = self.viewer.picture(self.plane, width, 2 * height)
        rgb = self.picture.rgb
        cells_high, cells_wide = (rgb.shape[0] + 1) // 2, rgb.shape[1]
        left = 1 + (width - cells_wide) // 2
        top = 1 + (height - cells_high) // 2
        letters = self.picture.letters
        blank = Strip.blank(size.width)
        lines = [blank] * size.height
        lines[top - 1] = self._letter_line(letters["top"], left + cells_wide // 2, size.width)
        lines[min(top + cells_high, size.height - 1)] = self._letter_line(letters["bottom"], left + cells_wide // 2,
                                                                          size.width)
        middle = cells_high // 2
        for row, cells in enumerate(half_block_rows(rgb)):
            gap = max(0, size.width - left - cells_wide - 1)
            side = (letters["left"], letters["right"]) if row == middle else (" ", " ")
            lines[top + row] = Strip([Segment(" " * (left - 1)), Segment(side[0], LETTER_STYLE), *cells,
                                      Segment(side[1], LETTER_STYLE), Segment(" " * gap)]).adjust_cell_length(size.width)
        self._lines = lines

    def _draw_graphics(self, width: int, height: int) -> None:
        from rsna_tui.review.png import annotated

        self.picture = self.viewer.picture(self.plane, width * 8, height * 16)
        self._image.image = annotated(self.picture)

    @staticmethod
    def _letter_line(letter: str, column: int, width: int) -> Strip:
        column = max(0, min(width - 1, column))
        return Strip([Segment(" " * column), Segment(letter, LETTER_STYLE), Segment(" " * (width - column - 1))],
                     width)

    def render_line(self, y: int) -> Strip:
        if self._image is not None or y >= len(self._lines):
            return Strip.blank(self.size.width)
        return self._lines[y]
