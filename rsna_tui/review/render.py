"""One plane of a case as an RGB array: windowed volume, overlays, and the orientation letters.

**Convention: radiological** by default, as a radiologist reads CT and MR: the patient's right is on
the screen's left in axial and coronal planes (letters R on the left, L on the right), anterior is up
in axial, superior is up in coronal and sagittal, anterior on the left in sagittal. ``neurological``
mirrors axial and coronal (L on the left). Every picture carries the letters of its four sides, so
whichever convention is chosen, a reader can never confuse left and right.

The picture is drawn at its output size (terminal cells or PNG pixels), not at voxel size and then
scaled, so a one-voxel box edge or a point marker stays visible in a 40-cell-wide terminal view:
output pixel -> slice pixel (nearest) -> volume voxel -> overlay labels through the map affines.
Pixels are square in millimetres: :func:`fit` keeps the plane's physical aspect ratio.

Colours: stage-1 box yellow (255, 255, 0) outline; decoder-1 aneurysm red, filled; decoder-2 vessel
classes one colour each (:data:`VESSEL_COLOURS`, legend in :func:`legend`); truth localizer points a
green (0, 255, 0) ring with a centre dot, on the slice that holds them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.labels import VESSELS
from rsna_tui.review.volume import ANEURYSM_LABEL, NORMAL_AXIS, CaseData
from rsna_tui.review.windows import Window

CONVENTIONS = ("radiological", "neurological")
OVERLAYS = ("box", "aneurysm", "vessels", "points")
BOX_COLOUR = (255, 255, 0)
POINT_COLOUR = (0, 255, 0)
ANEURYSM_COLOUR = (230, 30, 30)
VESSEL_COLOURS = (
    (31, 119, 180), (174, 199, 232), (255, 127, 14), (255, 187, 120), (188, 189, 34), (219, 219, 141),
    (148, 103, 189), (197, 176, 213), (140, 86, 75), (196, 156, 148), (227, 119, 194), (247, 182, 210),
    (23, 190, 207),
)
ALPHA = {"vessels": 0.45, "aneurysm": 0.65}
#: Sides' letters (top, bottom, left, right) per plane, radiological convention.
LETTERS = {"axial": ("A", "P", "R", "L"), "coronal": ("S", "I", "R", "L"), "sagittal": ("S", "I", "A", "P")}
_PALETTE = np.zeros((ANEURYSM_LABEL + 2, 3), dtype=np.float32)
_PALETTE[1:len(VESSELS) + 1] = VESSEL_COLOURS


def legend() -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of every overlay colour, for the PNG and the screen."""
    return [("stage-1 box", BOX_COLOUR), ("decoder-1 aneurysm", ANEURYSM_COLOUR), ("truth point", POINT_COLOUR),
            *zip(VESSELS, VESSEL_COLOURS)]


def letters(plane: str, convention: str = "radiological") -> dict[str, str]:
    top, bottom, left, right = LETTERS[plane]
    if convention == "neurological" and plane != "sagittal":
        left, right = right, left
    return {"top": top, "bottom": bottom, "left": left, "right": right}


@dataclass(frozen=True)
class PlaneGeometry:
    """How slice ``index`` of ``plane`` maps to voxels: slice pixel (row r, column c) -> (i, j, k)."""

    plane: str
    index: int
    shape: tuple[int, int, int]
    convention: str = "radiological"

    @property
    def axes(self) -> tuple[int, int]:
        """The voxel axes of (rows, columns)."""
        return {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}[self.plane]

    @property
    def flips(self) -> tuple[bool, bool]:
        """Whether rows / columns run against their voxel axis (superior up; the convention's sides)."""
        mirrored = self.convention == "neurological" and self.plane != "sagittal"
        return self.plane != "axial", mirrored

    @property
    def size(self) -> tuple[int, int]:
        rows, cols = self.axes
        return self.shape[rows], self.shape[cols]

    def to_voxel_axis(self, value: np.ndarray, which: int) -> np.ndarray:
        """Slice rows (which=0) or columns (1) -> voxel indices along that axis (and back: an involution)."""
        n = self.size[which]
        return (n - 1 - value) if self.flips[which] else value

    def voxels(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(len(rows), len(cols), 3) voxel indices of the slice pixels ``rows`` x ``cols``."""
        ijk = np.empty((len(rows), len(cols), 3), dtype=np.float64)
        row_axis, col_axis = self.axes
        ijk[..., NORMAL_AXIS[self.plane]] = self.index
        ijk[..., row_axis] = self.to_voxel_axis(rows, 0)[:, None]
        ijk[..., col_axis] = self.to_voxel_axis(cols, 1)[None, :]
        return ijk

    def slice_pixel(self, ijk: tuple[float, ...]) -> tuple[float, float, float]:
        """(row, column, distance in slices from this plane) of a voxel position."""
        row_axis, col_axis = self.axes
        row = float(self.to_voxel_axis(np.asarray(ijk[row_axis]), 0))
        col = float(self.to_voxel_axis(np.asarray(ijk[col_axis]), 1))
        return row, col, float(ijk[NORMAL_AXIS[self.plane]]) - self.index


@dataclass
class Picture:
    """A rendered plane: ``rgb`` (height, width, 3) uint8 and what places it."""

    rgb: np.ndarray
    geometry: PlaneGeometry
    letters: dict[str, str]
    scale: tuple[float, float]  # output pixels per slice pixel (rows, columns)

    def output_pixel(self, ijk: tuple[float, ...]) -> tuple[float, float]:
        """(y, x) output pixel centre of a voxel position (for tests and markers)."""
        row, col, _ = self.geometry.slice_pixel(ijk)
        return (row + 0.5) * self.scale[0] - 0.5, (col + 0.5) * self.scale[1] - 0.5


def fit(case: CaseData, plane: str, width: int, height: int) -> tuple[int, int]:
    """The largest (width, height) within the bounds that keeps the plane's millimetre aspect ratio."""
    geometry = PlaneGeometry(plane, 0, case.shape)
    (rows, cols), (row_axis, col_axis) = geometry.size, geometry.axes
    height_mm, width_mm = rows * case.spacing[row_axis], cols * case.spacing[col_axis]
    scale = min(width / width_mm, height / height_mm)
    return max(1, min(width, round(width_mm * scale))), max(1, min(height, round(height_mm * scale)))


def _sample_points(count: int, out: int) -> np.ndarray:
    """Slice pixel (nearest) under each of ``out`` output pixels spanning ``count`` slice pixels."""
    return np.minimum(((np.arange(out) + 0.5) * count / out).astype(np.int64), count - 1)


def _blend(rgb: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float) -> None:
    """Mix ``colour`` (one RGB, or one per pixel) into the masked pixels."""
    over = colour[mask] if colour.ndim > 1 else np.asarray(colour, dtype=np.float32)
    rgb[mask] = rgb[mask] * (1 - alpha) + over * alpha


def _box(rgb: np.ndarray, case: CaseData, picture: Picture) -> None:
    box, geometry = case.box, picture.geometry
    if box is None:
        return
    lo, hi = box[NORMAL_AXIS[geometry.plane]]
    if not lo <= geometry.index < hi:
        return
    edges = []
    for which, axis in enumerate(geometry.axes):
        a, b = box[axis]
        ends = geometry.to_voxel_axis(np.array([a, b - 1]), which)  # first and last voxel, in slice pixels
        first, last = int(ends.min()), int(ends.max())
        scale = picture.scale[which]  # output pixel y shows slice pixel floor((y + 0.5) / scale)
        start = int(np.ceil(first * scale - 0.5))
        edges.append((start, max(start, int(np.ceil((last + 1) * scale - 0.5)) - 1)))
    (y0, y1), (x0, x1) = edges
    height, width = rgb.shape[:2]
    y0, y1, x0, x1 = max(y0, 0), min(y1, height - 1), max(x0, 0), min(x1, width - 1)
    colour = np.asarray(BOX_COLOUR, dtype=np.float32)
    rgb[y0, x0:x1 + 1] = rgb[y1, x0:x1 + 1] = colour
    rgb[y0:y1 + 1, x0] = rgb[y0:y1 + 1, x1] = colour


def _points(rgb: np.ndarray, case: CaseData, picture: Picture) -> None:
    height, width = rgb.shape[:2]
    radius = max(2.0, min(height, width) / 40)
    yy, xx = np.mgrid[0:height, 0:width]
    for point in case.points:
        if round(picture.geometry.slice_pixel(point.ijk)[2]) != 0:
            continue
        y, x = picture.output_pixel(point.ijk)
        distance = np.hypot(yy - y, xx - x)
        ring = (np.abs(distance - radius) <= 0.6) | (distance <= 0.6)
        rgb[ring] = POINT_COLOUR


def render(case: CaseData, plane: str, index: int, window: Window, width: int, height: int,
           overlays: frozenset[str] | set[str] = frozenset(OVERLAYS), convention: str = "radiological") -> Picture:
    """Slice ``index`` of ``plane`` drawn into exactly ``width`` x ``height`` pixels (see :func:`fit`)."""
    if plane not in NORMAL_AXIS:
        raise ValueError(f"unknown plane {plane!r}; planes: axial, coronal, sagittal")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; conventions: {', '.join(CONVENTIONS)}")
    count = case.slice_count(plane)
    if not 0 <= index < count:
        raise ValueError(f"slice {index} is outside the {plane} planes 0..{count - 1} of {case.folder.name}")
    geometry = PlaneGeometry(plane, index, case.shape, convention)
    rows, cols = geometry.size
    r, c = _sample_points(rows, height), _sample_points(cols, width)
    ijk = geometry.voxels(r, c)
    flat = ijk.reshape(-1, 3).astype(np.int64)
    values = np.asarray(case.volume[flat[:, 0], flat[:, 1], flat[:, 2]], dtype=np.float32).reshape(height, width)
    grey = window.apply(values)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    picture = Picture(rgb, geometry, letters(plane, convention), (height / rows, width / cols))
    if "vessels" in overlays and "seg2" in case.maps:
        labels = case.sample_map("seg2", ijk)
        vessel = (labels > 0) & (labels <= len(VESSELS))
        _blend(rgb, vessel, _PALETTE[labels], ALPHA["vessels"])
    if "aneurysm" in overlays and "seg1" in case.maps:
        _blend(rgb, case.sample_map("seg1", ijk) == ANEURYSM_LABEL, np.asarray(ANEURYSM_COLOUR), ALPHA["aneurysm"])
    if "box" in overlays:
        _box(rgb, case, picture)
    if "points" in overlays:
        _points(rgb, case, picture)
    picture.rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    return picture
