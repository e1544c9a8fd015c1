"""One DICOM series -> LPS NIfTI volume(s), with the fallbacks of MODEL_SPEC 2.1.

The conversion itself is dicom2nifti's (``dicom_array_to_nifti`` with ``reorient_nifti=False``, the
function ``dicom_series_to_nifti`` calls after copying the folder): we read the files ourselves
because (a) files stripped to the competition's test allow-list have no SeriesInstanceUID, which
dicom2nifti's own folder reader requires, (b) it saves copying every series to a temporary folder,
and (c) the slice geometry read here is what places the localizers. The result is reoriented with
nibabel to axis codes L, P, S (dicom2nifti's own ``reorient_nifti=True`` gives LAS).

Fallbacks, tried in this order after plain dicom2nifti fails, and named in the outcome:
``multiframe`` (one multi-frame file; geometry from its functional groups, or ``multiframe:<tag>``
when only the top-level plane and SpacingBetweenSlices / SliceThickness are there, or
``multiframe:no_geometry_assumed_axial`` when nothing places the frames),
``largest_group`` (files grouped by study, frame of reference, modality and orientation rounded
to 4 decimals; the largest group sorted by InstanceNumber), ``timepoints:<n>`` (the same positions
repeated: one volume per time point), ``resampled`` (gantry tilt or uneven slice spacing: dicom2nifti's
resampling onto an orthogonal grid, linear interpolation rounded back to whole numbers when the
stored values are integers, padded with the darkest value of the end slices), and last
``instance_order:<n>_moved`` (positions that contradict each other, e.g. a duplicated
ImagePositionPatient: slices in InstanceNumber order on the line between the end slices, as the
original's fallback sorted by InstanceNumber; ``n`` slices were moved onto that line).

dicom2nifti's settings are module globals; :func:`dicom2nifti_settings` sets all of them for one
call and restores them, so one worker process can alternate strict and resampling conversions.
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import nibabel as nib
import numpy as np
import pydicom
from dicom2nifti import convert_dicom
from dicom2nifti import settings as d2n_settings
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from engine.data.geometry import (GeometryError, SliceGeometry, assumed_frame_geometries, frame_spacing,
                                  has_frame_geometry, reorient_to_lps, slice_geometries, stack_affine)
from engine.data.slice_gaps import SliceGaps

#: dicom2nifti's defaults, set explicitly for every strict attempt (whatever a caller left behind).
STRICT: dict[str, Any] = {
    "validate_slicecount": True, "validate_orientation": True, "validate_orthogonal": True,
    "validate_slice_increment": True, "validate_instance_number": False, "validate_multiframe_implicit": True,
    "pydicom_read_force": False, "resample": False, "resample_padding": 0, "resample_spline_interpolation_order": 0,
}
#: The gantry-tilt / uneven-spacing fallback: resample onto an orthogonal grid (trilinear).
RESAMPLE: dict[str, Any] = {**STRICT, "validate_orthogonal": False, "validate_slice_increment": False,
                            "resample": True, "resample_spline_interpolation_order": 1}

_EXPLAIN = {
    "NON_CUBICAL_IMAGE/GANTRY_TILT": "slices are not perpendicular to the stacking direction (gantry tilt)",
    "SLICE_INCREMENT_INCONSISTENT": "uneven spacing between slices (missing or extra slices?)",
    "TOO_FEW_SLICES/LOCALIZER": "fewer than 4 slices with one orientation: a localizer/scout or an incomplete series",
    "NOT_A_VOLUME": "all slices lie at the same position (ImagePositionPatient): not a volume",
    "IMAGE_ORIENTATION_INCONSISTENT": "slices with different ImageOrientationPatient in one series",
    "MISSING_DICOM_FILES": "time points with different numbers of slices (missing files?)",
    "NON_IMAGING_DICOM_FILES": "the files carry no ImageOrientationPatient (not a cross-sectional image)",
    "NO_DICOM_FILES_FOUND": "no DICOM image files",
}


class SeriesError(Exception):
    """A series that cannot be converted; the message is the one-line reason for the outcome table."""


@dataclass
class SeriesVolume:
    """A converted series: one LPS image per time point and what it took to get there."""

    images: list[nib.Nifti1Image]
    fallbacks: list[str]
    geometries: dict[str, list[SliceGeometry]]
    n_files: int
    ignored: list[str] = field(default_factory=list)

    @property
    def fallback(self) -> str:
        return "+".join(self.fallbacks)

    @property
    def gaps(self) -> SliceGaps | None:
        """Spacing of the slice positions that went into the volume (a hole shows after resampling)."""
        return SliceGaps.of(g for frames in self.geometries.values() for g in frames)


@contextmanager
def dicom2nifti_settings(values: dict[str, Any]) -> Iterator[None]:
    """Set every dicom2nifti setting for the duration of one call, then put the old values back."""
    saved = {name: getattr(d2n_settings, name) for name in values}
    try:
        for name, value in values.items():
            setattr(d2n_settings, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(d2n_settings, name, value)


@contextmanager
def quiet_dicom2nifti() -> Iterator[None]:
    """dicom2nifti logs every rejected check as warnings; the outcome table carries the reason instead."""
    logger = logging.getLogger("dicom2nifti")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        logger.setLevel(level)


def explain(exc: BaseException) -> str:
    """A person-readable line for a dicom2nifti / pydicom exception."""
    text = str(exc).strip()
    if text in _EXPLAIN:
        return _EXPLAIN[text]
    if "decode" in text.lower() or "transfer syntax" in text.lower():
        return f"pixel data cannot be decoded ({text[:160]}); install a decoder plugin such as pylibjpeg or gdcm"
    if isinstance(exc, (AttributeError, KeyError)):
        return f"a required DICOM tag is missing ({text[:160]})"
    return f"{type(exc).__name__}: {text[:200]}"


def _expected_bytes(ds: Any) -> int:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return int(ds.Rows) * int(ds.Columns) * frames * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8


def _pixel_bytes(ds: Any, path: Path) -> int | None:
    """Bytes of native pixel data the file really holds (read without loading it); None if unknown."""
    try:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            return None
        raw = ds.get_item("PixelData")
        if raw.value is not None:
            return len(raw.value)
        if raw.length == 0xFFFFFFFF:
            return None
        return max(0, min(int(raw.length), path.stat().st_size - int(raw.value_tell)))
    except (AttributeError, KeyError, TypeError, ValueError, OSError):
        return None


def read_series(files: list[Path]) -> tuple[list[Any], list[str]]:
    """Image datasets of a series folder, and one line per file left out (not DICOM, no pixels, ...)."""
    datasets, ignored = [], []
    for path in files:
        try:
            # Pixel data stays on disk until dicom2nifti decodes it (as dicom2nifti's own reader does):
            # dicom2nifti deep-copies every slice, which would otherwise copy all pixel bytes once more.
            ds = pydicom.dcmread(path, defer_size="1 KB")
        except InvalidDicomError:
            ignored.append(f"{path.name}: not a DICOM file")
            continue
        except Exception as exc:  # a truncated or corrupt file must not stop the series
            ignored.append(f"{path.name}: unreadable ({type(exc).__name__}: {str(exc)[:80]})")
            continue
        if "PixelData" not in ds:
            ignored.append(f"{path.name}: no pixel data")
        elif (held := _pixel_bytes(ds, path)) is not None and held < _expected_bytes(ds):
            ignored.append(f"{path.name}: truncated pixel data ({held} of {_expected_bytes(ds)} bytes)")
        elif int(ds.get("NumberOfFrames", 1) or 1) == 1 and ("ImagePositionPatient" not in ds
                                                             or "ImageOrientationPatient" not in ds):
            ignored.append(f"{path.name}: no ImagePositionPatient/ImageOrientationPatient")
        else:
            datasets.append(ds)
    return datasets, ignored


def _sop(ds: Any, fallback: str) -> str:
    return str(ds.get("SOPInstanceUID", "") or fallback)


def _geometries(datasets: list[Any]) -> dict[str, list[SliceGeometry]]:
    found = {}
    for index, ds in enumerate(datasets):
        try:
            found[_sop(ds, str(index))] = slice_geometries(ds)
        except (GeometryError, AttributeError, KeyError, TypeError, ValueError):
            continue  # such a file cannot carry a localizer; conversion reports its own error
    return found


def _run_dicom2nifti(datasets: list[Any], values: dict[str, Any]) -> list[nib.Nifti1Image]:
    """dicom2nifti on a list of datasets under the given settings; one 3D image per time point."""
    with tempfile.TemporaryDirectory(prefix="rsna-convert-") as tmp, dicom2nifti_settings(values):
        # The resampling path writes (and re-reads) its result, so it needs a file name.
        out = str(Path(tmp) / "volume.nii") if values.get("resample") else None
        result = convert_dicom.dicom_array_to_nifti(list(datasets), out, reorient_nifti=False)
        img = result["NII"]
        data = np.asanyarray(img.dataobj)
    if data.ndim == 3:
        return [nib.Nifti1Image(data, img.affine)]
    if data.ndim == 4:
        return [nib.Nifti1Image(np.ascontiguousarray(data[..., t]), img.affine) for t in range(data.shape[3])]
    raise SeriesError(f"dicom2nifti returned a {data.ndim}D array {data.shape}; expected a 3D volume")


def _group_key(ds: Any) -> tuple:
    orientation = tuple(round(float(v), 4) for v in ds.get("ImageOrientationPatient", ()) or ())
    return (str(ds.get("StudyInstanceUID", "")), str(ds.get("FrameOfReferenceUID", "")),
            str(ds.get("Modality", "")), orientation)


def _instance(ds: Any) -> int:
    try:
        return int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def largest_group(datasets: list[Any]) -> list[Any]:
    """The largest set of files sharing study, frame of reference, modality and orientation, by InstanceNumber."""
    groups: dict[tuple, list[Any]] = defaultdict(list)
    for ds in datasets:
        groups[_group_key(ds)].append(ds)
    best = max(groups.values(), key=len)
    return sorted(best, key=_instance)


def _position(ds: Any) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in ds.ImagePositionPatient)


def split_timepoints(datasets: list[Any]) -> list[list[Any]] | None:
    """Time points of a series whose slice positions repeat evenly, in InstanceNumber order; else None."""
    counts = Counter(_position(ds) for ds in datasets)
    repeats = set(counts.values())
    if len(counts) < 2 or len(repeats) != 1 or repeats == {1}:
        return None
    seen: Counter = Counter()
    points: dict[int, list[Any]] = defaultdict(list)
    for ds in sorted(datasets, key=_instance):
        position = _position(ds)
        points[seen[position]].append(ds)
        seen[position] += 1
    return [points[t] for t in sorted(points)]


def _rescale(ds: Any, frame: int) -> tuple[float, float]:
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    for group in ([per_frame[frame]] if per_frame is not None and frame < len(per_frame) else []) + \
            list(getattr(ds, "SharedFunctionalGroupsSequence", []) or []):
        if "PixelValueTransformationSequence" in group:
            item = group.PixelValueTransformationSequence[0]
            return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)
    return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)


def stack_multiframe(ds: Any, frames: list[SliceGeometry]) -> nib.Nifti1Image:
    """A multi-frame file as a volume placed by the given frame geometries (our fallback to dicom2nifti).

    Frames are sorted along the slice normal; their spacing must be even (else the series fails
    with that reason).
    """
    if len(frames) < 2:
        raise SeriesError("a single-frame file is not a volume")
    normal = frames[0].normal
    order = np.argsort([float(g.position @ normal) for g in frames])
    positions = np.array([frames[i].position for i in order])
    steps = np.diff(positions, axis=0)
    if np.any(np.linalg.norm(steps, axis=1) < 1e-6):
        raise SeriesError("frames of the multi-frame file share positions (several time points or not a volume)")
    if not np.allclose(steps, steps.mean(axis=0), rtol=0.05, atol=0.1):
        raise SeriesError("uneven spacing between the frames of the multi-frame file")
    pixels = np.asarray(ds.pixel_array)
    if pixels.ndim != 3:
        raise SeriesError(f"multi-frame pixel data has shape {pixels.shape}; expected (frames, rows, columns)")
    slopes = [_rescale(ds, int(i)) for i in order]
    data = np.stack([pixels[i] * s + b for i, (s, b) in zip(order, slopes)]).astype(np.float32)
    if np.all(np.mod(data, 1) == 0) and data.min() >= np.iinfo(np.int16).min and data.max() <= np.iinfo(np.int16).max:
        data = data.astype(np.int16)
    affine = stack_affine(frames[order[0]], steps.mean(axis=0))
    return nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), affine)


def _whole_numbers(ds: Any) -> bool:
    """Whether stored integers become whole numbers (integer rescale slope and intercept)."""
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return slope.is_integer() and intercept.is_integer() and "FloatPixelData" not in ds


def _resample_padding(datasets: list[Any]) -> float:
    """The darkest value of the first and last slice: air for CT, background for MR."""
    values = []
    for ds in (datasets[0], datasets[-1]):
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        values.append(float(np.min(ds.pixel_array)) * slope + intercept)
    return min(values)


def _join(attempts: list[tuple[str, str]]) -> str:
    """``a, b: same reason; c: other reason`` - one line, each reason once."""
    merged: list[tuple[list[str], str]] = []
    for name, reason in attempts:
        if merged and merged[-1][1] == reason:
            merged[-1][0].append(name)
        else:
            merged.append(([name], reason))
    return "; ".join(f"{', '.join(names)}: {reason}" for names, reason in merged)


def compact(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """float64 from dicom2nifti's rescaling -> int16 when the values are whole and fit, else float32."""
    data = np.asanyarray(img.dataobj)
    if data.dtype.kind != "f":
        return img
    info = np.iinfo(np.int16)
    whole = None
    if data.size and data.min() >= info.min and data.max() <= info.max:  # False for NaN too
        whole = data.astype(np.int16)
    data = whole if whole is not None and np.array_equal(whole, data) else data.astype(np.float32)
    return nib.Nifti1Image(data, img.affine)


def stack_by_instance(datasets: list[Any]) -> tuple[nib.Nifti1Image, dict[str, list[SliceGeometry]], int]:
    """Slices in InstanceNumber order, placed evenly on the line from the first to the last slice.

    The last resort for a series whose positions contradict each other (a duplicated or corrupt
    ImagePositionPatient) while its InstanceNumbers run cleanly: the order comes from InstanceNumber,
    as in the original's fallback, and each slice's position from the line between the end slices.
    At least 80 % of the slices must already lie where the line puts them. Returns the image, the
    geometry each slice was given (a localizer on a moved slice follows it) and how many moved.
    """
    ordered = sorted(datasets, key=_instance)
    n = len(ordered)
    if n < 4:
        raise SeriesError(f"{n} slices; a volume needs at least 4")
    if len({_instance(d) for d in ordered}) != n:
        raise SeriesError("InstanceNumbers repeat, so they cannot order the slices")
    if len({(int(d.Rows), int(d.Columns)) for d in ordered}) != 1:
        raise SeriesError("slices of different sizes")
    geometries = [slice_geometries(d)[0] for d in ordered]
    first = geometries[0]
    step = (geometries[-1].position - first.position) / (n - 1)
    length = float(np.linalg.norm(step))
    if length < 1e-6:
        raise SeriesError("the first and the last slice (by InstanceNumber) lie at the same position")
    if abs(float(step @ first.normal)) < 0.99 * length:
        raise SeriesError("the slices are not stacked along their normal (tilted or scattered positions)")
    predicted = first.position + np.arange(n)[:, None] * step
    actual = np.array([g.position for g in geometries])
    moved = np.linalg.norm(actual - predicted, axis=1) > max(0.1, 0.05 * length)
    if moved.mean() > 0.2:
        raise SeriesError(f"{int(moved.sum())} of {n} slices lie off the line between the end slices")
    data = np.stack([apply_modality_lut(d.pixel_array, d) for d in ordered]).astype(np.float32)
    image = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), stack_affine(first, step))
    placed = {_sop(d, str(i)): [SliceGeometry(predicted[i], first.row_dir, first.col_dir, first.row_spacing,
                                              first.col_spacing)] for i, d in enumerate(ordered)}
    return image, placed, int(moved.sum())


def _convert_single_frames(datasets: list[Any]
                           ) -> tuple[list[nib.Nifti1Image], list[str], dict[str, list[SliceGeometry]]]:
    """Images, the fallbacks used and the geometry of the slices that went into the images."""
    try:
        return _run_dicom2nifti(datasets, STRICT), [], _geometries(datasets)
    except Exception as exc:  # any failure of the plain path leads to the fallbacks
        first = exc
    if len({_position(ds) for ds in datasets}) == 1 and len(datasets) > 1:
        raise SeriesError(f"all {len(datasets)} slices lie at the same position (ImagePositionPatient): "
                          f"not a volume; check the export of this series")
    attempts = [("dicom2nifti", explain(first))]
    group = largest_group(datasets)
    fallbacks = []
    if len(group) < len(datasets):
        fallbacks = [f"largest_group:{len(group)}/{len(datasets)}"]
        try:
            return _run_dicom2nifti(group, STRICT), fallbacks, _geometries(group)
        except Exception as exc:
            attempts.append((f"largest group of {len(group)}/{len(datasets)} files", explain(exc)))
    timepoints = split_timepoints(group)
    if timepoints is not None:
        try:
            images = [_run_dicom2nifti(t, STRICT)[0] for t in timepoints]
            return images, [*fallbacks, f"timepoints:{len(images)}"], _geometries(group)
        except Exception as exc:
            attempts.append((f"{len(timepoints)} time points", explain(exc)))
    try:
        padding = _resample_padding(group)
        images = _run_dicom2nifti(group, {**RESAMPLE, "resample_padding": padding})
        if _whole_numbers(group[0]):  # interpolated values of integer data: keep them integers (int16 on disk)
            images = [nib.Nifti1Image(np.rint(np.asanyarray(img.dataobj)), img.affine) for img in images]
        return images, [*fallbacks, "resampled"], _geometries(group)
    except Exception as exc:
        attempts.append(("resampling", explain(exc)))
    try:
        image, placed, moved = stack_by_instance(group)
        return [image], [*fallbacks, f"instance_order:{moved}_moved"], placed
    except (SeriesError, GeometryError) as exc:
        attempts.append(("InstanceNumber order", str(exc)))
    raise SeriesError(_join(attempts))


def _multiframe_geometry(ds: Any) -> tuple[list[SliceGeometry], str]:
    """Frame geometries and the fallback name that says where they came from."""
    if has_frame_geometry(ds):
        return slice_geometries(ds), "multiframe"
    try:
        frames = slice_geometries(ds)
        return frames, f"multiframe:{frame_spacing(ds)[1]}"
    except GeometryError:
        return assumed_frame_geometries(ds), "multiframe:no_geometry_assumed_axial"


def _convert_multiframe(ds: Any) -> tuple[list[nib.Nifti1Image], list[str], list[SliceGeometry]]:
    frames, name = _multiframe_geometry(ds)
    if name == "multiframe":
        try:
            return _run_dicom2nifti([ds], STRICT), [name], frames
        except Exception as exc:
            first = f"dicom2nifti: {explain(exc)}"
    else:
        first = "dicom2nifti: no per-frame positions (functional groups)"
    try:
        return [stack_multiframe(ds, frames)], [name], frames
    except (SeriesError, GeometryError) as exc:
        raise SeriesError(f"{first}; own frame stacking: {exc}") from None


def load_series(files: list[Path]) -> SeriesVolume:
    """Read and convert one series folder's files; :class:`SeriesError` with the reason otherwise."""
    datasets, ignored = read_series(files)
    if not datasets:
        detail = f" ({len(ignored)} file(s) left out, e.g. {ignored[0]})" if ignored else ""
        raise SeriesError(f"empty series: no DICOM image files{detail}")
    multiframe = [ds for ds in datasets if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    with quiet_dicom2nifti():
        if multiframe:
            largest = max(multiframe, key=lambda d: int(d.NumberOfFrames))
            ignored += [f"{_sop(d, '?')}: other file beside the multi-frame file" for d in datasets if d is not largest]
            images, fallbacks, frames = _convert_multiframe(largest)
            geometries = {_sop(largest, "0"): frames}
        else:
            images, fallbacks, geometries = _convert_single_frames(datasets)
    if len(images) > 1 and not any(f.startswith("timepoints") for f in fallbacks):
        fallbacks.append(f"timepoints:{len(images)}")
    lps = [reorient_to_lps(compact(img)) for img in images]
    return SeriesVolume(lps, fallbacks, geometries, len(files), ignored)
