"""Localizer points -> voxels and aneurysm box masks (MODEL_SPEC 2.2).

The original wrote a point's (x, y) and its slice's index straight into the array, which is right
only for plain axial series. Here a point goes through the DICOM geometry of its own slice (or
frame) to patient millimetres, then through the converted volume's affine to a voxel, so sagittal,
coronal, reversed and multi-frame series land where the aneurysm is. A point on a multi-frame file
needs its frame index (``'f'``); without it the point is reported, never put on a guessed frame.

Box rule: one box edge per series and axis, drawn uniformly in [2, 5] mm (the ``box_mm`` parameter of
``convert``; the demo's sacs are 12-18 mm across, and its profile draws boxes of about that size), turned
into voxels as ``round(mm / spacing)`` (at least 1), covering ``[c - s//2, c + s//2]`` clipped to the volume,
filled with the location's label 14..26. Where boxes overlap, the later row of the table wins.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from engine.data.geometry import SliceGeometry, patient_to_voxel
from engine.data.kaggle import Localizer

BOX_MM = (2.0, 5.0)
VOXEL_COLUMNS = ("SeriesInstanceUID", "SOPInstanceUID", "location", "label", "x_mm", "y_mm", "z_mm", "i", "j", "k")


@dataclass(frozen=True)
class VoxelPoint:
    """A localizer placed in a converted volume: patient (LPS) mm and voxel (NIfTI array x, y, z)."""

    series_uid: str
    sop_uid: str
    location: str
    label: int
    lps: tuple[float, float, float]
    ijk: tuple[int, int, int]

    def row(self) -> dict[str, object]:
        return dict(zip(VOXEL_COLUMNS, (self.series_uid, self.sop_uid, self.location, self.label,
                                        *(round(v, 3) for v in self.lps), *self.ijk)))


def locate(point: Localizer, geometries: dict[str, list[SliceGeometry]], affine: np.ndarray,
           shape: tuple[int, ...]) -> VoxelPoint:
    """The voxel of one point; ValueError (one actionable line) when it cannot be placed."""
    frames = geometries.get(point.sop_uid)
    if frames is None:
        raise ValueError(f"localizer line {point.line}: SOPInstanceUID {point.sop_uid} is not among the converted "
                         f"slices of series {point.series_uid}")
    if point.frame is None and len(frames) > 1:
        # The competition's first release had no 'f': frame 0 would be a guess, often slices away.
        raise ValueError(f"localizer line {point.line}: ({point.x:g}, {point.y:g}) on the multi-frame file "
                         f"{point.sop_uid} ({len(frames)} frames) has no frame index 'f' in its coordinates; "
                         f"the point cannot be placed")
    frame = point.frame or 0
    if frame >= len(frames):
        raise ValueError(f"localizer line {point.line}: frame {frame} but {point.sop_uid} has {len(frames)} frame(s)")
    lps = frames[frame].pixel_to_patient(point.x, point.y)
    ijk = np.rint(patient_to_voxel(affine, lps)[0]).astype(int)
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(shape[:3])):
        raise ValueError(f"localizer line {point.line}: ({point.x:g}, {point.y:g}) on {point.sop_uid} maps to voxel "
                         f"{tuple(int(v) for v in ijk)} outside the volume {tuple(shape[:3])}")
    return VoxelPoint(point.series_uid, point.sop_uid, point.location, point.label,
                      tuple(float(v) for v in lps), tuple(int(v) for v in ijk))


def series_rng(seed: int, series_uid: str) -> np.random.Generator:
    """A generator that depends on the seed and the series only, so workers and reruns agree."""
    digest = hashlib.sha256(f"{seed}:{series_uid}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def box_range(value: object) -> tuple[float, float]:
    """A (low, high) box edge range in mm from a parameter value; ValueError naming what is wrong."""
    try:
        low, high = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"box_mm: expected two numbers low,high (mm), got {value!r}") from None
    if not 0 < low <= high:
        raise ValueError(f"box_mm: expected 0 < low <= high, got {low:g},{high:g}")
    return low, high


def box_edges(rng: np.random.Generator, spacing: tuple[float, float, float],
              box_mm: tuple[float, float] = BOX_MM) -> np.ndarray:
    """Box edge in voxels per axis: ``round(U[low, high] mm / spacing)`` (MODEL_SPEC: [2, 5]), at least 1."""
    edges_mm = rng.uniform(*box_mm, size=3)
    return np.maximum(1, np.rint(edges_mm / np.asarray(spacing, dtype=float))).astype(int)


def box_mask(shape: tuple[int, ...], points: list[VoxelPoint], edges: np.ndarray) -> np.ndarray:
    """uint8 mask (NIfTI array order) with one labelled box per point; all zero without points."""
    mask = np.zeros(shape[:3], dtype=np.uint8)
    half = np.asarray(edges) // 2
    for point in points:
        centre = np.asarray(point.ijk)
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, np.asarray(shape[:3]))
        mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = point.label
    return mask
