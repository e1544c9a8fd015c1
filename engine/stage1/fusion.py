"""Fusing the per-slice 2D boxes of the nine-slice inference into one 3D box (MODEL_SPEC 3, steps 3-5).

A slice along one axis measures the box on the other two: axial (z) slices give y and x, coronal
(y) slices z and x, sagittal (x) slices z and y. On every axis the bound is ``int(mean(starts))``
and ``int(mean(ends))`` over the slices that measured it, with half-open ends (last foreground
index + 1), as the original's fusion. No slice with foreground: the whole volume; an axis that no
slice measured: its full range. ``margin`` voxels are then added on every side, clipped to the volume.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.stage1.slices import AXES, box_of


@dataclass(frozen=True)
class SliceBox:
    """Foreground extent on one predicted slice: half-open (start, end) on its rows and columns."""

    axis: int
    position: int
    rows: tuple[int, int]
    cols: tuple[int, int]

    @classmethod
    def from_mask(cls, axis: int, position: int, mask: np.ndarray) -> "SliceBox | None":
        """The box of a 2D prediction's foreground, or None when it has none."""
        ranges = box_of(np.asarray(mask) > 0)
        return None if ranges is None else cls(axis, position, ranges[0], ranges[1])

    def measured(self) -> dict[int, tuple[int, int]]:
        """Volume axis -> range this slice measures."""
        other = [a for a in range(3) if a != self.axis]
        return {other[0]: self.rows, other[1]: self.cols}


@dataclass(frozen=True)
class Box3D:
    """A half-open (z, y, x) box and the fallback that produced it ('' when none)."""

    z: tuple[int, int]
    y: tuple[int, int]
    x: tuple[int, int]
    fallback: str = ""

    @property
    def ranges(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        return self.z, self.y, self.x

    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in self.ranges)  # type: ignore[return-value]

    def contains(self, z: float, y: float, x: float) -> bool:
        return all(a <= v < b for v, (a, b) in zip((z, y, x), self.ranges))


def fuse(shape: tuple[int, int, int], boxes: list[SliceBox], margin: int = 0) -> Box3D:
    """The 3D box of MODEL_SPEC 3 from the slices that had foreground.

    ``fallback`` is ``no_foreground`` (whole volume) or ``full_range:<axes>`` naming the axes that
    no slice measured, e.g. ``full_range:z``.
    """
    if not boxes:
        return Box3D((0, shape[0]), (0, shape[1]), (0, shape[2]), "no_foreground")
    starts: dict[int, list[int]] = {0: [], 1: [], 2: []}
    ends: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for box in boxes:
        for axis, (lo, hi) in box.measured().items():
            starts[axis].append(lo)
            ends[axis].append(hi)
    ranges, unmeasured = [], []
    for axis in range(3):
        if starts[axis]:
            lo, hi = int(np.mean(starts[axis])), int(np.mean(ends[axis]))
        else:
            lo, hi = 0, shape[axis]
            unmeasured.append(AXES[axis])
        lo, hi = max(0, lo - margin), min(shape[axis], hi + margin)
        ranges.append((lo, max(hi, lo + 1)))  # never empty: a crop must hold a voxel
    fallback = f"full_range:{','.join(unmeasured)}" if unmeasured else ""
    return Box3D(ranges[0], ranges[1], ranges[2], fallback)
