"""A case's review files in memory: the converted volume, the two decoder maps, the box and the points.

Everything is placed on the **converted volume's voxel grid** (NIfTI array order i, j, k = patient
L, P, S, since predict saves the volume reoriented to L, P, S): the decoder maps are sampled through
their own affines (``inv(A_map) @ A_volume``, nearest neighbour, with ``nibabel.affines``), never by
assuming where the crop was; localizer points go from their LPS millimetres through the volume's
affine. The volume is memory-mapped (``volume.nii`` is uncompressed), so opening a case costs
milliseconds and a slice reads only its own voxels.

Planes are indexed by the voxel axis they cut: axial = k (S), coronal = j (P), sagittal = i (L).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.affines import apply_affine

from engine.data.geometry import patient_to_voxel
from engine.labels import VESSELS

#: The file names of ``engine.inference.review`` / ``review_extras``, not imported from there because
#: importing ``engine.inference`` loads torch (seconds), which the review needs nowhere (tested equal).
CASE_FILE, VOLUME_FILE, LOCALIZERS_FILE = "case.json", "volume.nii", "localizers.csv"

PLANES = ("axial", "coronal", "sagittal")
#: The voxel axis (0 = i, 1 = j, 2 = k) each plane cuts.
NORMAL_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
ANEURYSM_LABEL = len(VESSELS) + 1  # decoder 1: 14 = aneurysm


class CaseFilesError(RuntimeError):
    """Review files that are missing or do not fit together (names the file)."""


@dataclass(frozen=True)
class Point:
    """A truth localizer point in the volume: fractional voxel (i, j, k) and its location name."""

    location: str
    ijk: tuple[float, float, float]


@dataclass
class CaseData:
    """The loaded review files of one case."""

    folder: Path
    record: dict[str, Any]
    volume: np.ndarray  # (i, j, k), memory-mapped
    affine: np.ndarray
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (data, volume->map)
    points: list[Point] = field(default_factory=list)
    _stats: dict[str, float] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.volume.shape[:3])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel edges (mm) along i, j, k."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def box(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
        """The stage-1 box as half-open voxel ranges along i, j, k (``case.json`` stores z, y, x)."""
        b = self.record.get("box")
        if not b:
            return None
        return (int(b["x0"]), int(b["x1"])), (int(b["y0"]), int(b["y1"])), (int(b["z0"]), int(b["z1"]))

    def slice_count(self, plane: str) -> int:
        return self.shape[NORMAL_AXIS[plane]]

    def middle(self, plane: str) -> int:
        return self.slice_count(plane) // 2

    def stats(self) -> dict[str, float]:
        """Intensity figures for window presets, from a subsample (every 4th voxel per axis)."""
        if self._stats is None:
            sample = np.asarray(self.volume[::4, ::4, ::4], dtype=np.float32).ravel()
            foreground = sample[sample > sample.min()] if sample.size else sample
            foreground = foreground if foreground.size else sample
            percentiles = (0.5, 1, 5, 95, 99, 99.5)
            values = np.percentile(foreground, percentiles) if foreground.size else np.zeros(len(percentiles))
            self._stats = {"min": float(sample.min()) if sample.size else 0.0,
                           **{f"p{p:g}": float(v) for p, v in zip(percentiles, values)}}
        return self._stats

    def sample_map(self, name: str, ijk: np.ndarray) -> np.ndarray:
        """Labels of map ``name`` at volume voxels ``ijk`` (..., 3); 0 outside the map."""
        data, volume_to_map = self.maps[name]
        index = np.rint(apply_affine(volume_to_map, ijk)).astype(np.int64)
        inside = np.all((index >= 0) & (index < np.asarray(data.shape[:3])), axis=-1)
        out = np.zeros(ijk.shape[:-1], dtype=np.uint8)
        hit = index[inside]
        out[inside] = data[hit[:, 0], hit[:, 1], hit[:, 2]]
        return out

    def strongest_response(self) -> tuple[int, int, int] | None:
        """Volume voxel of the densest decoder-1 aneurysm voxels (a 3^3 window), None without any.

        The saved maps are arg-max labels, not probabilities, so "strongest" is where the most
        neighbouring voxels say aneurysm.
        """
        from scipy import ndimage  # only here: scipy.ndimage adds a fifth of a second to every start

        if "seg1" not in self.maps:
            return None
        data, volume_to_map = self.maps["seg1"]
        mask = (np.asarray(data) == ANEURYSM_LABEL).astype(np.float32)
        if not mask.any():
            return None
        density = ndimage.uniform_filter(mask, size=3, mode="constant") * mask
        index = np.unravel_index(int(np.argmax(density)), mask.shape)
        voxel = apply_affine(np.linalg.inv(volume_to_map), np.asarray(index, dtype=float))
        return tuple(int(v) for v in np.clip(np.rint(voxel), 0, np.asarray(self.shape) - 1))  # type: ignore[return-value]


def _load_image(path: Path) -> nib.Nifti1Image:
    try:
        return nib.load(str(path), mmap=True)
    except Exception as exc:
        raise CaseFilesError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def _points(path: Path, affine: np.ndarray) -> list[Point]:
    if not path.is_file():
        return []
    points = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("issue") or not row.get("x_mm"):
                continue
            lps = np.array([float(row["x_mm"]), float(row["y_mm"]), float(row["z_mm"])])
            points.append(Point(row["location"], tuple(float(v) for v in patient_to_voxel(affine, lps)[0])))
    return points


def load_case(folder: Path | str) -> CaseData:
    """Open one case folder (``case.json``, ``volume.nii``, optional maps and ``localizers.csv``)."""
    folder = Path(folder)
    record_path = folder / CASE_FILE
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        raise CaseFilesError(f"cannot read {record_path}: {exc}") from exc
    volume_path = folder / VOLUME_FILE
    if not volume_path.is_file():
        why = record.get("reason") if record.get("status") != "ok" else "the job predates volume saving or ran " \
              "without save_segmentations; predict again to review it"
        raise CaseFilesError(f"{volume_path} is missing: {why}")
    image = _load_image(volume_path)
    codes = "".join(nib.aff2axcodes(image.affine))
    if codes != "LPS":
        raise CaseFilesError(f"{volume_path} has axis codes {codes}; predict saves volumes as LPS")
    volume = np.asanyarray(image.dataobj)
    if volume.ndim != 3:
        raise CaseFilesError(f"{volume_path} is {volume.ndim}D; expected one 3D volume")
    case = CaseData(folder, record, volume, image.affine)
    segmentations = record.get("segmentations") or {}
    for name in ("seg1", "seg2"):
        if name in segmentations and (folder / segmentations[name]).is_file():
            seg = _load_image(folder / segmentations[name])
            case.maps[name] = (np.asarray(seg.dataobj), np.linalg.inv(seg.affine) @ image.affine)
    case.points = _points(folder / LOCALIZERS_FILE, image.affine)
    return case


__all__ = ["ANEURYSM_LABEL", "CaseData", "CaseFilesError", "NORMAL_AXIS", "PLANES", "Point", "load_case"]
