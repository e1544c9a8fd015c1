"""Acquisition grids of the demo cohort: where each voxel of a synthetic series sits in patient space.

One :class:`SliceGrid` describes a stack of parallel slices exactly as the DICOM tags will state it
(ImageOrientationPatient, ImagePositionPatient, PixelSpacing, slice spacing), so the pixels that are
rendered and the tags that are written come from the same numbers and cannot disagree. Spacings and
the origin are rounded to what a DICOM decimal string holds before anything is rendered from them.

Conventions (DICOM PS3.3 C.7.6.2.1.1): patient axes are L(+x), P(+y), S(+z); ``row_dir`` is the
direction of increasing column index (along a row), ``col_dir`` that of increasing row index; the
slice normal is ``row_dir x col_dir``; voxel (i = column, j = row, k = slice) sits at
``origin + i*dc*row_dir + j*dr*col_dir + k*ds*normal``, where slice k counts along the normal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: (row_dir, col_dir) of the three standard planes, as scanners write them.
ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),      # normal +S (feet -> head)
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),   # normal +P (front -> back)
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),  # normal -L, i.e. towards the patient's right
}
#: Decimals kept for positions and spacings (a DICOM DS holds at most 16 characters).
DECIMALS = 4


@dataclass(frozen=True)
class SliceGrid:
    """A stack of ``slices`` images of ``rows`` x ``cols`` pixels in patient LPS space."""

    orientation: str
    rows: int
    cols: int
    slices: int
    #: Distance between rows and between columns, in DICOM PixelSpacing order (mm).
    row_spacing: float
    col_spacing: float
    #: Distance between slice centres along the normal (mm).
    slice_spacing: float
    #: LPS position of the centre of voxel (i=0, j=0, k=0).
    origin: tuple[float, float, float]

    @classmethod
    def centred(cls, orientation: str, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                centre: np.ndarray) -> "SliceGrid":
        """A grid of ``shape`` = (slices, rows, cols), ``spacing`` = (slice, row, col) mm, centred on a point."""
        slices, rows, cols = shape
        ds, dr, dc = (round(float(s), DECIMALS) for s in spacing)
        row_dir, col_dir = (np.array(v) for v in ORIENTATIONS[orientation])
        normal = np.cross(row_dir, col_dir)
        half = (cols - 1) / 2 * dc * row_dir + (rows - 1) / 2 * dr * col_dir + (slices - 1) / 2 * ds * normal
        origin = tuple(round(float(v), DECIMALS) for v in np.asarray(centre, float) - half)
        return cls(orientation, rows, cols, slices, dr, dc, ds, origin)

    @property
    def row_dir(self) -> np.ndarray:
        return np.array(ORIENTATIONS[self.orientation][0])

    @property
    def col_dir(self) -> np.ndarray:
        return np.array(ORIENTATIONS[self.orientation][1])

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (slices, rows, cols) of the rendered volume."""
        return self.slices, self.rows, self.cols

    @property
    def image_orientation(self) -> list[float]:
        """The six ImageOrientationPatient values."""
        return [float(v) for v in (*self.row_dir, *self.col_dir)]

    def image_position(self, k: int) -> list[float]:
        """ImagePositionPatient of slice ``k`` (the centre of its first pixel)."""
        p = np.asarray(self.origin) + k * self.slice_spacing * self.normal
        return [round(float(v), DECIMALS) for v in p]

    def axes(self) -> np.ndarray:
        """3x3 matrix whose columns are the LPS steps of one voxel along i (column), j (row), k (slice)."""
        return np.stack(
            [self.row_dir * self.col_spacing, self.col_dir * self.row_spacing, self.normal * self.slice_spacing],
            axis=1,
        )

    def lps_to_voxel(self, points: np.ndarray) -> np.ndarray:
        """Continuous voxel indices (i = column, j = row, k = slice) of LPS points (..., 3)."""
        return (np.asarray(points, float) - np.asarray(self.origin)) @ np.linalg.inv(self.axes()).T

    def lps_coordinates(self) -> np.ndarray:
        """LPS mm of every voxel centre, shape (slices, rows, cols, 3), float32."""
        k, j, i = (np.arange(n, dtype=np.float32) for n in self.shape)
        axes = self.axes().astype(np.float32)
        out = (
            k[:, None, None, None] * axes[:, 2]
            + j[None, :, None, None] * axes[:, 1]
            + i[None, None, :, None] * axes[:, 0]
        )
        return out + np.asarray(self.origin, np.float32)

    def nifti_affine(self) -> np.ndarray:
        """RAS affine (nibabel convention) of the array transposed to (cols, rows, slices) = (i, j, k)."""
        affine = np.eye(4)
        affine[:3, :3] = self.axes()
        affine[:3, 3] = self.origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
