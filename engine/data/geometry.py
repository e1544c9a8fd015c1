"""DICOM and NIfTI geometry: where a pixel of a DICOM slice lies in the patient, and in a volume.

DICOM patient coordinates are LPS millimetres (x to the patient's left, y to the back, z to the
head); NIfTI affines map voxel indices to RAS millimetres. Every conversion between the two goes
through this module so that the sign flip is written once.

A pixel's position is that of its centre: ``ImagePositionPatient`` is the centre of the first
pixel, the first three ``ImageOrientationPatient`` values are the direction of increasing column
index (along a row, step ``PixelSpacing[1]``), the last three that of increasing row index (step
``PixelSpacing[0]``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from scipy import ndimage

#: Axis codes of every converted volume (MODEL_SPEC 2.1): array (x, y, z) runs to L, P, S.
LPS_CODES: tuple[str, str, str] = ("L", "P", "S")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


class GeometryError(ValueError):
    """A DICOM file lacks the tags that place its pixels in the patient."""


@dataclass(frozen=True)
class SliceGeometry:
    """The plane of one 2D frame in patient (LPS) space."""

    position: np.ndarray  # centre of pixel (row 0, column 0), mm
    row_dir: np.ndarray  # unit vector of increasing column index
    col_dir: np.ndarray  # unit vector of increasing row index
    row_spacing: float  # mm between rows (PixelSpacing[0])
    col_spacing: float  # mm between columns (PixelSpacing[1])

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    def pixel_to_patient(self, column: float, row: float) -> np.ndarray:
        """LPS mm of the pixel at (column x, row y), fractional positions allowed."""
        return self.position + column * self.col_spacing * self.row_dir + row * self.row_spacing * self.col_dir


def _floats(value: Any, n: int, name: str) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{name} is not a list of numbers ({value!r}): {exc}") from None
    if array.shape != (n,) or not np.all(np.isfinite(array)):
        raise GeometryError(f"{name} needs {n} finite numbers, got {value!r}")
    return array


def _geometry(position: Any, orientation: Any, spacing: Any) -> SliceGeometry:
    pos = _floats(position, 3, "ImagePositionPatient")
    ori = _floats(orientation, 6, "ImageOrientationPatient")
    sp = _floats(spacing, 2, "PixelSpacing")
    row_dir, col_dir = ori[:3], ori[3:]
    norms = np.linalg.norm(row_dir), np.linalg.norm(col_dir)
    if min(norms) < 1e-6 or np.min(sp) <= 0:
        raise GeometryError(f"degenerate ImageOrientationPatient {list(ori)} or PixelSpacing {list(sp)}")
    return SliceGeometry(pos, row_dir / norms[0], col_dir / norms[1], float(sp[0]), float(sp[1]))


def _group_item(ds: Any, frame: int, sequence: str) -> Any | None:
    """The first item of ``sequence`` in frame ``frame``'s per-frame group, else in the shared group."""
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if per_frame is not None and frame < len(per_frame) and sequence in per_frame[frame]:
        return per_frame[frame][sequence][0]
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    if shared is not None and len(shared) and sequence in shared[0]:
        return shared[0][sequence][0]
    return None


def has_frame_geometry(ds: Any) -> bool:
    """Whether a multi-frame file places each frame itself (functional groups with positions)."""
    return _group_item(ds, 0, "PlanePositionSequence") is not None


def frame_spacing(ds: Any) -> tuple[float, str]:
    """Distance between frames of a multi-frame file without per-frame positions, and its source tag."""
    measures = _group_item(ds, 0, "PixelMeasuresSequence")
    for source in (measures, ds):
        if source is None:
            continue
        for tag in ("SpacingBetweenSlices", "SliceThickness"):
            value = getattr(source, tag, None)
            if value not in (None, "") and float(value) > 0:
                return float(value), tag
    raise GeometryError("multi-frame file without per-frame positions, SpacingBetweenSlices or SliceThickness")


def frame_geometry(ds: Any, frame: int = 0) -> SliceGeometry:
    """Geometry of one frame: from the functional groups when present, else from the top level.

    Without per-frame positions (a multi-frame file stripped to the competition's allow-list), frame
    ``k`` is taken to lie ``k`` slice spacings along the slice normal from ImagePositionPatient;
    :func:`frame_spacing` says where that spacing comes from.
    """
    position_item = _group_item(ds, frame, "PlanePositionSequence")
    orientation_item = _group_item(ds, frame, "PlaneOrientationSequence")
    measures_item = _group_item(ds, frame, "PixelMeasuresSequence")
    orientation = getattr(orientation_item, "ImageOrientationPatient", None) or ds.get("ImageOrientationPatient")
    spacing = getattr(measures_item, "PixelSpacing", None) or ds.get("PixelSpacing")
    if orientation is None or spacing is None:
        raise GeometryError("no ImageOrientationPatient / PixelSpacing (neither top level nor functional groups)")
    if position_item is not None:
        return _geometry(position_item.ImagePositionPatient, orientation, spacing)
    if ds.get("ImagePositionPatient") is None:
        raise GeometryError("no ImagePositionPatient (neither top level nor functional groups)")
    first = _geometry(ds.ImagePositionPatient, orientation, spacing)
    if frame == 0:
        return first
    step, _ = frame_spacing(ds)
    return SliceGeometry(first.position + frame * step * first.normal, first.row_dir, first.col_dir,
                         first.row_spacing, first.col_spacing)


def slice_geometries(ds: Any) -> list[SliceGeometry]:
    """One geometry per frame of a DICOM file (a single entry for an ordinary slice)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return [frame_geometry(ds, f) for f in range(frames)]


def assumed_frame_geometries(ds: Any) -> list[SliceGeometry]:
    """Frames of a multi-frame file with no plane geometry at all (an Enhanced file stripped to the
    competition's allow-list keeps neither functional groups nor a top-level position).

    Nothing places such a volume in the patient, so it is taken as axial (rows to P, columns to L)
    at the origin, with PixelSpacing and SpacingBetweenSlices / SliceThickness where present and 1 mm
    otherwise. The voxel grid is then right and localizer frames still land on their own frame; only
    the orientation is a guess (the conversion records it).
    """
    spacing = ds.get("PixelSpacing") or (1.0, 1.0)
    try:
        step = frame_spacing(ds)[0]
    except GeometryError:
        step = 1.0
    first = _geometry((0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), spacing)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return [SliceGeometry(first.position + f * step * first.normal, first.row_dir, first.col_dir,
                          first.row_spacing, first.col_spacing) for f in range(frames)]


def lps_to_ras(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=float) @ _LPS_TO_RAS.T


def patient_to_voxel(affine: np.ndarray, lps: np.ndarray) -> np.ndarray:
    """Fractional voxel indices (NIfTI array order) of LPS points under a RAS NIfTI affine."""
    ras = lps_to_ras(np.atleast_2d(lps))
    homogeneous = np.c_[ras, np.ones(len(ras))]
    return (np.linalg.inv(affine) @ homogeneous.T).T[:, :3]


def voxel_to_patient(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """LPS mm of voxel indices under a RAS NIfTI affine."""
    ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
    ras = (affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    return lps_to_ras(ras)  # the flip is its own inverse


def stack_affine(first: SliceGeometry, step: np.ndarray) -> np.ndarray:
    """RAS affine of a volume whose array is (column, row, frame) from its first slice and slice step."""
    lps = np.eye(4)
    lps[:3, 0] = first.row_dir * first.col_spacing
    lps[:3, 1] = first.col_dir * first.row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = first.position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def reorient_to_lps(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """The same image with its array permuted / flipped so that the axis codes are L, P, S."""
    transform = ornt_transform(io_orientation(img.affine), axcodes2ornt(LPS_CODES))
    return img.as_reoriented(transform)


def axis_codes(affine: np.ndarray) -> str:
    return "".join(nib.aff2axcodes(affine))


def resample_nearest(data: np.ndarray, src_affine: np.ndarray, dst_shape: tuple[int, ...],
                     dst_affine: np.ndarray) -> np.ndarray:
    """Labels ``data`` (on ``src_affine``) sampled onto another grid by nearest neighbour in world space.

    A target voxel takes the source voxel whose extent (half a voxel around its centre) contains it;
    outside the source volume it gets 0 ("grid-constant": plain "constant" also zeroes the edge voxels
    that rounding places a hair outside).
    """
    src_from_dst = np.linalg.inv(src_affine) @ dst_affine
    return ndimage.affine_transform(
        np.asarray(data), src_from_dst[:3, :3], offset=src_from_dst[:3, 3], output_shape=tuple(dst_shape[:3]),
        order=0, mode="grid-constant", cval=0, prefilter=False,
    )
