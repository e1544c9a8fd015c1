"""Volume and slice handling shared by the 2D training set and the nine-slice inference.

Both sides must cut, normalise and resample slices identically, so it happens here once.
Volumes are numpy arrays in (z, y, x) order, read from the converted LPS NIfTI files
(``get_fdata().transpose(2, 1, 0)``); a slice along ``axis`` keeps the other two axes in
order, so axial slices are (y, x), coronal (z, x) and sagittal (z, y).
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

AXES = ("z", "y", "x")


def read_volume(path: Path, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """A converted NIfTI as a (z, y, x) array and its (z, y, x) spacing in mm."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    spacing = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)[::-1]
    return np.ascontiguousarray(data.transpose(2, 1, 0)).astype(dtype, copy=False), spacing


def inference_positions(n: int) -> list[int]:
    """The slice positions MODEL_SPEC 3 uses on an axis of length ``n``: n//4, n//2, 3n//4 (distinct)."""
    return sorted({n // 4, n // 2, (3 * n) // 4})


def take_slice(volume: np.ndarray, axis: int, position: int) -> np.ndarray:
    """The 2D slice at ``position`` along ``axis``; the remaining axes keep their order."""
    return np.take(volume, position, axis=axis)


def plane_spacing(spacing_zyx: np.ndarray, axis: int) -> tuple[float, float]:
    """In-plane (rows, columns) spacing of a slice along ``axis``."""
    rest = [float(s) for i, s in enumerate(spacing_zyx) if i != axis]
    return rest[0], rest[1]


def zscore(slice_2d: np.ndarray) -> np.ndarray:
    """Normalise a slice by its own mean and standard deviation (std at least 1e-8)."""
    data = slice_2d.astype(np.float32, copy=False)
    return (data - data.mean()) / max(float(data.std()), 1e-8)


def target_shape(shape: tuple[int, int], spacing: tuple[float, float], target: tuple[float, float]) -> tuple[int, int]:
    """The shape a slice gets when resampled from ``spacing`` to ``target`` (at least 1 pixel)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))  # type: ignore[return-value]


def resample(slice_2d: np.ndarray | torch.Tensor, shape: tuple[int, int], label: bool = False) -> torch.Tensor:
    """Resample a 2D array, or a (C, H, W) tensor, to ``shape``: bilinear, or nearest for labels."""
    data = torch.as_tensor(slice_2d)
    squeeze = data.ndim == 2
    data = data[None, None] if squeeze else data[None]
    data = data.float()
    if tuple(data.shape[-2:]) != tuple(shape):
        if label:
            data = F.interpolate(data, size=shape, mode="nearest")
        else:
            data = F.interpolate(data, size=shape, mode="bilinear", align_corners=False)
    return data[0, 0] if squeeze else data[0]


def prepare_slice(slice_2d: np.ndarray, spacing: tuple[float, float], target: tuple[float, float]) -> torch.Tensor:
    """z-score, then resample to the target spacing: what both the training set and inference feed the net."""
    return resample(zscore(slice_2d), target_shape(slice_2d.shape, spacing, target))


def box_of(mask: np.ndarray) -> list[tuple[int, int]] | None:
    """Half-open index range of the nonzero voxels on every axis, or None when there are none."""
    ranges = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        ranges.append((int(hits[0]), int(hits[-1]) + 1))
    return ranges
