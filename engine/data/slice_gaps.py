"""Gaps between the slices of a series: the trace a hole leaves once resampling has filled it.

A series with missing slices (say 4 slices with a 200 mm hole) converts through dicom2nifti's
resampling fallback into an even stack of slices, nearly all of them interpolated; the volume itself
no longer says that most of it was invented. :class:`SliceGaps` measures the slice
positions that went into the volume, along the slice normal, so that ``convert`` (``conversion.csv``)
and ``predict`` (``cases.csv``) can name such a series. The threshold is a factor of the median
spacing (``max_gap_factor``, default 3, a parameter of both stages).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from engine.data.geometry import SliceGeometry

#: The default ``max_gap_factor``: a gap above 3x the median spacing is noted.
DEFAULT_FACTOR = 3.0
#: Positions closer than this (mm) along the normal are one slice position (time points repeat them).
SAME_POSITION_MM = 0.01


@dataclass(frozen=True)
class SliceGaps:
    """Largest and median distance between neighbouring slice positions of one series (mm)."""

    largest: float
    median: float

    @classmethod
    def of(cls, geometries: Iterable[SliceGeometry]) -> "SliceGaps | None":
        """The gaps of a set of slice / frame geometries; None with fewer than three positions."""
        planes = list(geometries)
        if not planes:
            return None
        normal = planes[0].normal
        offsets = np.unique(np.round([float(g.position @ normal) for g in planes], 2))
        steps = np.diff(offsets)
        steps = steps[steps > SAME_POSITION_MM]
        if steps.size < 2:
            return None
        return cls(float(steps.max()), float(np.median(steps)))

    @classmethod
    def from_row(cls, largest: object, median: object) -> "SliceGaps | None":
        """The gaps stored in a table row (``max_gap_mm``, ``median_gap_mm``); None when blank."""
        try:
            return cls(float(largest), float(median))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None

    def exceeds(self, factor: float) -> bool:
        return self.median > 0 and self.largest > factor * self.median

    def note(self, factor: float) -> str:
        """One line for the outcome tables when the largest gap exceeds ``factor`` x the median, else ''."""
        if not self.exceeds(factor):
            return ""
        return (f"largest slice gap {self.largest:g} mm = {self.largest / self.median:.1f}x the median spacing "
                f"{self.median:g} mm (limit {factor:g}x): missing slices? the volume interpolates across the gap")
