"""What inference reads: a DICOM series folder or a NIfTI file -> LPS volume(s) in (z, y, x) order.

DICOM goes through the conversion of ``engine.data.dicom_series.load_series`` (dicom2nifti with all
the fallbacks of MODEL_SPEC 2.1, reoriented to L, P, S), in memory: the same code as the ``convert``
stage, so a series predicted from its DICOM folder and from its converted ``images/<uid>_0000.nii.gz``
gives the same array. A NIfTI file is reoriented to L, P, S with nibabel; a 4D NIfTI is read as one
volume per time point, like a DICOM series with repeated positions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from engine.data.dicom_series import SeriesError, load_series
from engine.data.geometry import reorient_to_lps
from engine.data.slice_gaps import SliceGaps

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class EmptySeries(SeriesError):
    """A series folder without any DICOM image: predicted as 0.5 everywhere (MODEL_SPEC 8)."""


@dataclass
class LoadedSeries:
    """The volumes of one series (one per time point), as (z, y, x) arrays, and how they were read."""

    volumes: list[np.ndarray]
    spacing: np.ndarray  # (z, y, x) mm
    affine: np.ndarray  # of the LPS NIfTI (x, y, z index order), for review files
    fallback: str = ""
    notes: list[str] = field(default_factory=list)
    #: Spacing of the DICOM slice positions (None for NIfTI input): a large gap was interpolated.
    gaps: SliceGaps | None = None


def is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def series_id(path: Path) -> str:
    """The SeriesInstanceUID a path stands for: a folder's name, a NIfTI's name without ``.nii[.gz]``
    and without nnU-Net's channel suffix ``_0000``."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name[: -len("_0000")] if name.endswith("_0000") else name


def zyx(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """A 3D LPS image as a float32 (z, y, x) array and its (z, y, x) spacing; the reading of
    ``engine.stage1.slices.read_volume``, for an image already in memory."""
    data = np.asarray(img.dataobj)
    if data.ndim != 3:
        raise SeriesError(f"expected a 3D volume, got shape {data.shape}")
    spacing = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)[::-1]
    return np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.float32, copy=False), spacing


def _split_4d(img: nib.Nifti1Image) -> list[nib.Nifti1Image]:
    data = np.asarray(img.dataobj)
    if data.ndim == 3:
        return [img]
    if data.ndim == 4:
        return [nib.Nifti1Image(data[..., t], img.affine) for t in range(data.shape[3])]
    raise SeriesError(f"NIfTI with {data.ndim} dimensions; expected a 3D volume or 4D time series")


def dicom_files(folder: Path) -> list[Path]:
    """The regular files of a series folder (sub-folders included, hidden files left out), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def load(path: Path | str) -> LoadedSeries:
    """Read a series folder or NIfTI file. Raises :class:`EmptySeries` for a folder without DICOM
    images and ``SeriesError`` (with a one-line reason) for anything that cannot be turned into a volume."""
    path = Path(path)
    if is_nifti(path):
        try:
            images = [reorient_to_lps(img) for img in _split_4d(nib.load(str(path)))]
        except SeriesError:
            raise
        except Exception as exc:
            raise SeriesError(f"cannot read NIfTI {path.name}: {type(exc).__name__}: {exc}") from exc
        fallback, notes, gaps = (f"timepoints:{len(images)}" if len(images) > 1 else ""), [], None
    elif path.is_dir():
        files = dicom_files(path)
        if not files:
            raise EmptySeries("empty series: the folder holds no files")
        try:
            volume = load_series(files)
        except SeriesError as exc:
            if str(exc).startswith("empty series"):
                raise EmptySeries(str(exc)) from None
            raise
        images, fallback, notes, gaps = volume.images, volume.fallback, volume.ignored, volume.gaps
    else:
        raise SeriesError(f"{path} is neither a DICOM series folder nor a .nii/.nii.gz file")
    arrays = [zyx(img) for img in images]
    return LoadedSeries([a for a, _ in arrays], arrays[0][1], images[0].affine, fallback, list(notes), gaps)
