"""The headless picture: one plane with every overlay, the orientation letters, the convention and the
legend, as a PNG (Pillow), for reports and for tests.

Layout: a title line, then the plane inside a margin that holds its four letters (centred on each
side), then the legend to its right. :func:`write_png` returns where the plane lies in the file
(``image_box`` = x, y, width, height in PNG pixels, ``scale`` = PNG pixels per slice pixel) so that a
script can find a voxel in the picture: ``Picture.output_pixel`` plus the box's origin.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from rsna_tui.review.render import OVERLAYS, Picture, fit, legend, render
from rsna_tui.review.volume import CaseData
from rsna_tui.review.windows import Window

MARGIN = 30
TITLE = 40
LEGEND_WIDTH = 250
SIZE = 640
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _centred(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: Any) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text((xy[0] - (right - left) / 2 - left, xy[1] - (bottom - top) / 2 - top), text, fill=TEXT, font=font)


def _letters(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], sides: dict[str, str], font: Any) -> None:
    """The four orientation letters centred on the sides of ``box`` (x, y, width, height), in its margin."""
    x0, y0, width, height = box
    _centred(draw, (x0 + width / 2, y0 - MARGIN / 2), sides["top"], font)
    _centred(draw, (x0 + width / 2, y0 + height + MARGIN / 2), sides["bottom"], font)
    _centred(draw, (x0 - MARGIN / 2, y0 + height / 2), sides["left"], font)
    _centred(draw, (x0 + width + MARGIN / 2, y0 + height / 2), sides["right"], font)


def annotated(picture: Picture) -> Image.Image:
    """The picture inside a margin holding its letters (the terminal graphics renderer shows this)."""
    height, width = picture.rgb.shape[:2]
    canvas = Image.new("RGB", (width + 2 * MARGIN, height + 2 * MARGIN), BACKGROUND)
    canvas.paste(Image.fromarray(picture.rgb, "RGB"), (MARGIN, MARGIN))
    _letters(ImageDraw.Draw(canvas), (MARGIN, MARGIN, width, height), picture.letters, _font(20))
    return canvas


def write_png(case: CaseData, plane: str, index: int, window: Window, path: Path | str, title: str = "",
              overlays: frozenset[str] = frozenset(OVERLAYS), convention: str = "radiological",
              size: int = SIZE) -> dict[str, Any]:
    """Draw slice ``index`` of ``plane`` with its letters and legend into ``path``; returns the layout."""
    width, height = fit(case, plane, size, size)
    picture = render(case, plane, index, window, width, height, overlays, convention)
    x0, y0 = MARGIN, TITLE + MARGIN
    canvas = Image.new("RGB", (width + 2 * MARGIN + LEGEND_WIDTH, max(height + 2 * MARGIN + TITLE, 420)), BACKGROUND)
    canvas.paste(Image.fromarray(picture.rgb, "RGB"), (x0, y0))
    draw = ImageDraw.Draw(canvas)
    big, small = _font(20), _font(12)
    sides = picture.letters
    _letters(draw, (x0, y0, width, height), sides, big)
    count = case.slice_count(plane)
    heading = f"{title}  {plane} {index + 1}/{count}  {window.describe()}".strip()
    draw.text((8, 4), heading, fill=TEXT, font=small)
    draw.text((8, 20), f"{convention} convention: patient's {sides['left']} on the screen's left", fill=TEXT,
              font=small)
    lx, ly = x0 + width + MARGIN + 8, y0
    for name, colour in legend():
        draw.rectangle((lx, ly + 2, lx + 10, ly + 12), fill=colour)
        draw.text((lx + 16, ly), name, fill=TEXT, font=small)
        ly += 18
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial.png")
    canvas.save(partial, format="PNG")
    os.replace(partial, path)
    return {"png": str(path), "plane": plane, "slice": index, "slices": count, "window": window.describe(),
            "convention": convention, "letters": sides, "image_box": [x0, y0, width, height],
            "scale": list(picture.scale), "overlays": sorted(overlays)}
