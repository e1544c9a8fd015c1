"""Stage ``convert`` on real scans (../shared/data), run once per module on one Kaggle-layout batch.

The batch holds dicom2nifti's anatomical regression series (GE, Siemens, Philips, Hitachi), its
``failing/`` series, the gantry-tilted GE head CT, the 120-slice brain MR and series written here
from a crop of that MR with pydicom: the crop as axial, sagittal, coronal and rotated/reversed
axial slices, as an Enhanced multi-frame file with functional groups and as one stripped of all
geometry, a copy keeping only the competition's test allow-list tags, and a two-time-point series.
Each reformatted series carries a localizer at the same anatomical point, so all of them must
land on the same voxel of the same LPS grid.
"""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from engine.context import StageContext
from engine.data.convert import TABLE_COLUMNS, run
from engine.data.dicom_series import RESAMPLE, dicom2nifti_settings, load_series
from engine.data.geometry import reorient_to_lps, voxel_to_patient
from engine.data.localizers import BOX_MM, box_edges, box_range, series_rng
from engine.labels import LOCALIZER_COLUMNS, LOCATIONS, aneurysm_label

VENDORS = ("ge", "siemens", "philips", "hitachi")
FAILING = ("gantrytilting/001", "notavolume/001", "slicecount/001", "sliceincrement/001", "sliceincrement/002",
           "sliceorientation/001")
#: Competition test allow-list (COMPETITION.md) plus what a file needs to hold pixels.
ALLOWED = {"BitsAllocated", "BitsStored", "Columns", "FrameOfReferenceUID", "HighBit", "ImageOrientationPatient",
           "ImagePositionPatient", "InstanceNumber", "Modality", "PatientID", "PhotometricInterpretation",
           "PixelRepresentation", "PixelSpacing", "PlanarConfiguration", "RescaleIntercept", "RescaleSlope",
           "RescaleType", "Rows", "SOPClassUID", "SOPInstanceUID", "SamplesPerPixel", "SliceThickness",
           "SpacingBetweenSlices", "StudyInstanceUID", "PixelData", "NumberOfFrames"}
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
#: Crop of the MR (slice, row, column ranges of the sorted axial stack) and the target point in it.
CROP = ((50, 74), (200, 240), (230, 262))
TARGET = (11, 17, 9)  # (slice, row, column) inside the crop
REFORMATS = ("mr.axial", "mr.sagittal", "mr.coronal", "mr.rotated", "mr.multiframe", "mr.allowlist")


def _ds(values: list[float]) -> list[str]:
    return [f"{v:.6f}"[:16] for v in values]


class MrStack:
    """The real MR's sorted axial slices as a (slice, row, column) array with its geometry."""

    def __init__(self, folder: Path) -> None:
        slices = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
        slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        self.template = slices[0]
        self.template.remove_private_tags()
        self.volume = np.stack([d.pixel_array for d in slices]).astype(np.uint16)
        orientation = np.array(slices[0].ImageOrientationPatient, float)
        self.u, self.v = orientation[:3], orientation[3:]
        self.dr, self.dc = (float(x) for x in slices[0].PixelSpacing)
        first, last = (np.array(d.ImagePositionPatient, float) for d in (slices[0], slices[-1]))
        self.origin, self.step = first, (last - first) / (len(slices) - 1)

    def point(self, k: float, r: float, c: float) -> np.ndarray:
        """LPS mm of voxel (slice k, row r, column c)."""
        return self.origin + k * self.step + r * self.dr * self.v + c * self.dc * self.u

    def crop(self) -> np.ndarray:
        (k0, k1), (r0, r1), (c0, c1) = CROP
        return self.volume[k0:k1, r0:r1, c0:c1]


def _slice(stack: MrStack, series_uid: str, pixels: np.ndarray, position: np.ndarray, row_dir: np.ndarray,
           col_dir: np.ndarray, spacing: tuple[float, float], instance: int) -> Dataset:
    ds = copy.deepcopy(stack.template)
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    ds.ImagePositionPatient = _ds(list(position))
    ds.ImageOrientationPatient = _ds([*row_dir, *col_dir])
    ds.PixelSpacing = _ds(list(spacing))
    ds.SliceThickness = f"{np.linalg.norm(stack.step):.4f}"
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = instance
    if "SliceLocation" in ds:
        del ds.SliceLocation
    return ds


def write_reformats(stack: MrStack, series_root: Path) -> dict[str, tuple[str, float, float, int | None]]:
    """The crop written as several series; returns, per series, where the target point is on it
    (SOPInstanceUID, column x, row y, frame)."""
    (k0, k1), (r0, r1), (c0, c1) = CROP
    crop = stack.crop()
    nk, nr, nc = crop.shape
    tk, tr, tc = TARGET
    dz = float(np.linalg.norm(stack.step))
    n = stack.step / dz
    targets: dict[str, tuple[str, float, float, int | None]] = {}

    def save(name: str, slices: list[Dataset], target_slice: int, x: float, y: float) -> None:
        folder = series_root / name
        folder.mkdir(parents=True)
        for ds in slices:
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        targets[name] = (str(slices[target_slice].SOPInstanceUID), x, y, None)

    uid = generate_uid()
    axial = [_slice(stack, uid, crop[k], stack.point(k0 + k, r0, c0), stack.u, stack.v, (stack.dr, stack.dc), k + 1)
             for k in range(nk)]
    save("mr.axial", axial, tk, tc, tr)
    # Sagittal: one slice per column; image rows run from the top slice down, columns along the rows (v).
    uid = generate_uid()
    sagittal = [_slice(stack, uid, crop[::-1, :, c], stack.point(k1 - 1, r0, c0 + c), stack.v, -n, (dz, stack.dr),
                       c + 1) for c in range(nc)]
    save("mr.sagittal", sagittal, tc, tr, nk - 1 - tk)
    # Coronal: one slice per row; image columns along u.
    uid = generate_uid()
    coronal = [_slice(stack, uid, crop[::-1, r, :], stack.point(k1 - 1, r0 + r, c0), stack.u, -n, (dz, stack.dc),
                      r + 1) for r in range(nr)]
    save("mr.coronal", coronal, tr, tc, nk - 1 - tk)
    # Axial rotated by 180 degrees in plane, InstanceNumber running from head to feet.
    uid = generate_uid()
    rotated = [_slice(stack, uid, crop[k, ::-1, ::-1], stack.point(k0 + k, r1 - 1, c1 - 1), -stack.u, -stack.v,
                      (stack.dr, stack.dc), nk - k) for k in range(nk)]
    save("mr.rotated", rotated, tk, nc - 1 - tc, nr - 1 - tr)
    # Allow-list only: the axial slices with every other tag removed.
    uid = generate_uid()
    stripped = []
    for k in range(nk):
        ds = _slice(stack, uid, crop[k], stack.point(k0 + k, r0, c0), stack.u, stack.v, (stack.dr, stack.dc), k + 1)
        for keyword in [e.keyword for e in ds if e.keyword not in ALLOWED]:
            delattr(ds, keyword)
        stripped.append(ds)
    save("mr.allowlist", stripped, tk, tc, tr)
    # Enhanced multi-frame with functional groups, frames stored from head to feet.
    order = list(range(nk))[::-1]
    mf = _slice(stack, generate_uid(), crop[0], stack.point(k0, r0, c0), stack.u, stack.v, (stack.dr, stack.dc), 1)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        delattr(mf, keyword)
    mf.SOPClassUID = mf.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    mf.NumberOfFrames = nk
    mf.PixelData = np.ascontiguousarray(crop[order]).tobytes()
    mf.SharedFunctionalGroupsSequence = Sequence([Dataset()])
    shared = mf.SharedFunctionalGroupsSequence[0]
    shared.PixelMeasuresSequence = Sequence([Dataset()])
    shared.PixelMeasuresSequence[0].PixelSpacing = _ds([stack.dr, stack.dc])
    shared.PixelMeasuresSequence[0].SliceThickness = f"{dz:.4f}"
    shared.PlaneOrientationSequence = Sequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = _ds([*stack.u, *stack.v])
    frames = []
    for k in order:
        item = Dataset()
        item.PlanePositionSequence = Sequence([Dataset()])
        item.PlanePositionSequence[0].ImagePositionPatient = _ds(list(stack.point(k0 + k, r0, c0)))
        frames.append(item)
    mf.PerFrameFunctionalGroupsSequence = Sequence(frames)
    (series_root / "mr.multiframe").mkdir(parents=True)
    mf.save_as(series_root / "mr.multiframe" / f"{mf.SOPInstanceUID}.dcm", enforce_file_format=True)
    targets["mr.multiframe"] = (str(mf.SOPInstanceUID), tc, tr, order.index(tk))
    # The same file stripped to the allow-list: no geometry is left at all.
    bare = copy.deepcopy(mf)
    for keyword in [e.keyword for e in bare if e.keyword not in ALLOWED]:
        delattr(bare, keyword)
    bare.SOPInstanceUID = bare.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    (series_root / "mr.multiframe_bare").mkdir(parents=True)
    bare.save_as(series_root / "mr.multiframe_bare" / f"{bare.SOPInstanceUID}.dcm", enforce_file_format=True)
    targets["mr.multiframe_bare"] = (str(bare.SOPInstanceUID), tc, tr, order.index(tk))
    return targets


def write_timepoints(source: Path, folder: Path) -> None:
    """Two time points of a real 4-slice series: the slices, then the same positions with new pixels."""
    folder.mkdir(parents=True)
    slices = sorted((pydicom.dcmread(p) for p in source.glob("*.dcm")), key=lambda d: int(d.InstanceNumber))
    for t in (0, 1):
        for i, original in enumerate(slices):
            ds = copy.deepcopy(original)
            ds.InstanceNumber = t * len(slices) + i + 1
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            if t:
                ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)


def _labels_for(image_affine: np.ndarray, shape: tuple[int, int, int]) -> nib.Nifti1Image:
    """A vessel label volume on a series' own DICOM grid, stored in RAS order (unlike our LPS)."""
    labels = np.zeros(shape, np.uint8)
    labels[2:9, 3:7, 4:12] = 7
    labels[20:26, 30:36, 15:20] = 13
    labels[0, 0, 0] = 1
    return nib.as_closest_canonical(nib.Nifti1Image(labels, image_affine))


@pytest.fixture(scope="module")
def batch(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build the Kaggle-layout batch, run ``convert`` once with 2 workers, return what the tests need."""
    root = tmp_path_factory.mktemp("convert")
    dataset = root / "ws" / "datasets" / "real"
    series = dataset / "series"
    series.mkdir(parents=True)
    d2n = shared_data / "dicom2nifti" / "tests" / "data"
    for vendor in VENDORS:
        (series / f"d2n.{vendor}").symlink_to(d2n / vendor / "anatomical" / "001")
    for case in FAILING:
        (series / f"failing.{case.replace('/', '.')}").symlink_to(d2n / "failing" / case)
    (series / "ct.ge_tilt").symlink_to(shared_data / "dcm_qa_ct" / "In" / "GE")
    (series / "mr.t1").symlink_to(shared_data / "niivue-demo-images" / "dicom")
    (series / "empty").mkdir()
    stack = MrStack(shared_data / "niivue-demo-images" / "dicom")
    targets = write_reformats(stack, series)
    write_timepoints(d2n / "ge" / "anatomical" / "001", series / "d2n.ge_timepoints")

    mr_files = sorted((shared_data / "niivue-demo-images" / "dicom").glob("*.dcm"))
    mr_slice = pydicom.dcmread(mr_files[59], stop_before_pixels=True)
    rows = [[name, sop, str({"x": x, "y": y, **({"f": f} if f is not None else {})}), LOCATIONS[6]]
            for name, (sop, x, y, f) in targets.items()]
    rows.append(["mr.t1", str(mr_slice.SOPInstanceUID), "{'x': 300.0, 'y': 200.0}", LOCATIONS[0]])
    rows.append(["mr.t1", "1.2.3.4.404", "{'x': 10, 'y': 10}", LOCATIONS[1]])  # slice absent from the series
    rows.append(["no.such.series", "1.2.3.4.405", "{'x': 10, 'y': 10}", LOCATIONS[1]])
    pd.DataFrame(rows, columns=LOCALIZER_COLUMNS).to_csv(dataset / "train_localizers.csv", index=False)

    # Vessel labels for the axial crop (per-series sub-folder) and the sagittal one (flattened layout).
    seg_root = dataset / "segmentations"
    axial_affine = _dicom_grid_affine(stack)
    nk, nr, nc = stack.crop().shape
    seg = _labels_for(axial_affine, (nc, nr, nk))
    (seg_root / "mr.axial").mkdir(parents=True)
    nib.save(seg, seg_root / "mr.axial" / "mr.axial_cowseg.nii")
    nib.save(seg, seg_root / "mr.sagittal_cowseg.nii.gz")

    ctx = StageContext.for_folder(root / "ws")
    run({"dataset": "real", "split": "train", "workers": 2, "seed": 7}, ctx)
    out = ctx.workspace.converted("real", "train")
    table = pd.read_csv(out / "conversion.csv").astype(object).fillna("").set_index("SeriesInstanceUID")
    return {"ctx": ctx, "out": out, "table": table, "stack": stack, "targets": targets, "seg": seg,
            "mr_slice": mr_slice, "points": pd.read_csv(out / "localizers_voxel.csv")}


def _dicom_grid_affine(stack: MrStack) -> np.ndarray:
    """RAS affine of the crop's (column, row, slice) array, computed from the DICOM geometry alone."""
    (k0, _), (r0, _), (c0, _) = CROP
    lps = np.eye(4)
    lps[:3, 0] = stack.u * stack.dc
    lps[:3, 1] = stack.v * stack.dr
    lps[:3, 2] = stack.step
    lps[:3, 3] = stack.point(k0, r0, c0)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _image(batch: dict, uid: str) -> nib.Nifti1Image:
    return nib.load(batch["out"] / "images" / f"{uid}_0000.nii.gz")


def test_batch_outcome_table_and_artefacts(batch: dict) -> None:
    table, ctx = batch["table"], batch["ctx"]
    assert list(table.reset_index().columns) == list(TABLE_COLUMNS)
    assert set(table["status"]) <= {"converted", "converted_fallback", "failed"}
    assert len(table) == 4 + len(FAILING) + 3 + len(REFORMATS) + 2
    artefacts = ctx.reporter.artefacts
    assert {"conversion_table", "images", "masks", "localizers", "vessels"} <= set(artefacts)
    assert Path(artefacts["conversion_table"]).is_file() and Path(artefacts["images"]).is_dir()
    progress = ctx.reporter.of_type("progress")
    assert progress[-1]["done"] == progress[-1]["total"] == len(table)
    logs = "\n".join(e["message"] for e in ctx.reporter.of_type("log"))
    assert f"{len(table)} series: converted" in logs and "failed empty: empty series" in logs
    assert "localizers of 1 series without a folder are ignored, e.g. no.such.series" in logs
    converted = table[table["status"] != "failed"]
    assert set(converted["axis_codes"]) == {"LPS"}
    for uid in converted.index:
        img = _image(batch, uid)
        assert "".join(nib.aff2axcodes(img.affine)) == "LPS"
        assert "x".join(map(str, img.shape)) == table.loc[uid, "shape"]
        mask = nib.load(batch["out"] / "masks" / f"{uid}.nii.gz")  # every converted series of a labelled split
        assert mask.shape == img.shape and mask.get_data_dtype() == np.uint8
        assert np.allclose(mask.affine, img.affine)
    assert not list(batch["out"].rglob(".partial"))  # no temporary file left behind


@pytest.mark.parametrize("vendor", VENDORS)
def test_regression_series_equal_dicom2nifti_ground_truth_in_world_space(batch: dict, shared_data: Path,
                                                                         vendor: str) -> None:
    ours = _image(batch, f"d2n.{vendor}")
    assert batch["table"].loc[f"d2n.{vendor}", "status"] == "converted"
    d2n = shared_data / "dicom2nifti" / "tests" / "data" / vendor / "anatomical"
    for truth_file in ("001_ground_truth.nii.gz", "001_ground_truth_reoriented.nii.gz"):
        truth = reorient_to_lps(nib.load(d2n / truth_file))
        assert truth.shape == ours.shape
        np.testing.assert_allclose(ours.affine, truth.affine, atol=1e-3)
        np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(truth.dataobj))


def test_gantry_tilted_ge_ct_converts_through_resampling_fallback(batch: dict) -> None:
    row = batch["table"].loc["ct.ge_tilt"]
    assert (row["status"], row["fallback"], row["shape"], row["axis_codes"]) == (
        "converted_fallback", "resampled", "513x611x36", "LPS")
    data = np.asanyarray(_image(batch, "ct.ge_tilt").dataobj)
    assert data.dtype == np.int16 and data.min() >= -3024 and data.max() > 1000  # HU, air padding, bone


def test_brain_mr_converts_to_512x512x120_lps(batch: dict) -> None:
    row = batch["table"].loc["mr.t1"]
    assert (row["status"], row["fallback"], row["shape"], row["axis_codes"]) == ("converted", "", "512x512x120", "LPS")
    assert row["n_files"] == 121 and row["n_ignored"] == 1 and "not a DICOM file" in row["notes"]
    img = _image(batch, "mr.t1")
    assert img.get_fdata().transpose(2, 1, 0).shape == (120, 512, 512)
    np.testing.assert_allclose(img.header.get_zooms(), (0.41015625, 0.41015625, 1.5), rtol=1e-6)


def test_localizer_on_real_axial_slice_lands_on_its_pixel(batch: dict, shared_data: Path) -> None:
    points = batch["points"]
    (row,) = points[(points["SeriesInstanceUID"] == "mr.t1")].itertuples()
    dicom = pydicom.dcmread(shared_data / "niivue-demo-images" / "dicom" / "1-060.dcm")
    assert row.SOPInstanceUID == dicom.SOPInstanceUID and row.label == aneurysm_label(LOCATIONS[0])
    data = np.asanyarray(_image(batch, "mr.t1").dataobj)
    # The 5x5 neighbourhood around the point in the volume is the one around pixel (x=300, y=200).
    np.testing.assert_array_equal(data[row.i - 2:row.i + 3, row.j - 2:row.j + 3, row.k].T,
                                  dicom.pixel_array[198:203, 298:303])
    issues = batch["table"].loc["mr.t1", "localizer_issues"]
    assert "SOPInstanceUID 1.2.3.4.404 is not among the converted slices of series mr.t1" in issues


@pytest.mark.parametrize("name", ["mr.sagittal", "mr.coronal", "mr.rotated", "mr.multiframe", "mr.allowlist"])
def test_reformatted_series_give_the_same_lps_volume_and_voxel(batch: dict, name: str) -> None:
    reference, other = _image(batch, "mr.axial"), _image(batch, name)
    np.testing.assert_allclose(other.affine, reference.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asanyarray(other.dataobj), np.asanyarray(reference.dataobj))
    points = batch["points"].set_index("SeriesInstanceUID")
    assert tuple(points.loc[name, ["i", "j", "k"]]) == tuple(points.loc["mr.axial", ["i", "j", "k"]])
    # ... and that voxel is the target point, in patient space and in intensity.
    stack, ijk = batch["stack"], tuple(int(v) for v in points.loc[name, ["i", "j", "k"]])
    (k0, _), (r0, _), (c0, _) = CROP
    expected = stack.point(k0 + TARGET[0], r0 + TARGET[1], c0 + TARGET[2])
    np.testing.assert_allclose(voxel_to_patient(other.affine, ijk)[0], expected, atol=1e-3)
    np.testing.assert_allclose(points.loc[name, ["x_mm", "y_mm", "z_mm"]].astype(float), expected, atol=2e-3)
    assert np.asanyarray(other.dataobj)[ijk] == stack.crop()[TARGET]
    status = batch["table"].loc[name, ["status", "fallback"]].tolist()
    assert status == (["converted_fallback", "multiframe"] if name == "mr.multiframe" else ["converted", ""])


def test_multiframe_without_any_geometry_is_flagged_and_self_consistent(batch: dict) -> None:
    row = batch["table"].loc["mr.multiframe_bare"]
    assert (row["status"], row["fallback"]) == ("converted_fallback", "multiframe:no_geometry_assumed_axial")
    points = batch["points"].set_index("SeriesInstanceUID")
    data = np.asanyarray(_image(batch, "mr.multiframe_bare").dataobj)
    ijk = tuple(int(v) for v in points.loc["mr.multiframe_bare", ["i", "j", "k"]])
    assert data[ijk] == batch["stack"].crop()[TARGET]


def test_masks_hold_boxes_of_two_to_five_mm_with_the_location_label(batch: dict) -> None:
    for name in REFORMATS:
        img = nib.load(batch["out"] / "masks" / f"{name}.nii.gz")
        mask = np.asanyarray(img.dataobj)
        assert set(np.unique(mask)) == {0, aneurysm_label(LOCATIONS[6])}
        ijk = tuple(int(v) for v in batch["points"].set_index("SeriesInstanceUID").loc[name, ["i", "j", "k"]])
        assert mask[ijk]
        extent = np.array([np.ptp(a) + 1 for a in np.nonzero(mask)]) * np.array(img.header.get_zooms())
        spacing = np.array(img.header.get_zooms())
        assert np.all(extent >= 2 - spacing / 2) and np.all(extent <= 5 + 1.5 * spacing)
    assert not np.any(np.asanyarray(nib.load(batch["out"] / "masks" / "d2n.siemens.nii.gz").dataobj))


def test_box_mm_sets_the_box_edge_range_and_rejects_nonsense() -> None:
    """convert's ``box_mm``: the spec's 2-5 mm by default, the demo's 10-16 mm (sacs 12-18 mm across)."""
    spacing = (0.5, 0.5, 1.0)
    for box_mm in (BOX_MM, (10.0, 16.0)):
        edges = np.stack([box_edges(series_rng(seed, "1.2.3"), spacing, box_mm) for seed in range(200)])
        mm = edges * np.array(spacing)
        assert mm.min() >= box_mm[0] - spacing[2] / 2 and mm.max() <= box_mm[1] + spacing[2] / 2
        assert mm.max() - mm.min() > 0.5 * (box_mm[1] - box_mm[0])  # drawn over the range, not one value
    assert box_range([10, 16]) == (10.0, 16.0)
    for bad in ([5.0], [6.0, 2.0], [0.0, 1.0], "x"):
        with pytest.raises(ValueError, match="box_mm"):
            box_range(bad)


def test_vessel_labels_resampled_into_the_image_grid_both_layouts(batch: dict) -> None:
    expected = np.asanyarray(reorient_to_lps(batch["seg"]).dataobj)
    for name in ("mr.axial", "mr.sagittal"):
        assert batch["table"].loc[name, "vessels"] == "written"
        vessels = nib.load(batch["out"] / "vessels" / f"{name}.nii.gz")
        assert vessels.get_data_dtype() == np.uint8
        np.testing.assert_allclose(vessels.affine, _image(batch, name).affine, atol=1e-6)
        np.testing.assert_array_equal(np.asanyarray(vessels.dataobj), expected)
    assert not (batch["out"] / "vessels" / "mr.coronal.nii.gz").exists()


def test_failing_series_convert_through_a_fallback_or_fail_with_a_clear_reason(batch: dict) -> None:
    table = batch["table"]
    expected = {
        "failing.gantrytilting.001": ("converted_fallback", "resampled"),
        "failing.sliceincrement.001": ("converted_fallback", "resampled"),
        "failing.sliceincrement.002": ("converted_fallback", "resampled"),
        "failing.notavolume.001": ("failed", "all 4 slices lie at the same position"),
        "failing.slicecount.001": ("failed", "fewer than 4 slices with one orientation"),
        "failing.sliceorientation.001": ("failed", "largest group of 2/4 files"),
        "empty": ("failed", "empty series: no DICOM image files"),
    }
    for uid, (status, detail) in expected.items():
        row = table.loc[uid]
        assert row["status"] == status, (uid, row["reason"])
        assert detail in (row["fallback"] if status != "failed" else row["reason"])
        if status == "failed":
            assert "\n" not in row["reason"] and not (batch["out"] / "images" / f"{uid}_0000.nii.gz").exists()


def test_time_points_are_split(batch: dict) -> None:
    row = batch["table"].loc["d2n.ge_timepoints"]
    assert row["status"] == "converted_fallback" and row["timepoints"] == 2 and "timepoints:2" in row["fallback"]
    first = np.asanyarray(_image(batch, "d2n.ge_timepoints").dataobj)
    second = np.asanyarray(nib.load(batch["out"] / "timepoints" / "d2n.ge_timepoints_t001_0000.nii.gz").dataobj)
    np.testing.assert_array_equal(first, np.asanyarray(_image(batch, "d2n.ge").dataobj))
    np.testing.assert_array_equal(second, first // 2)


def test_rerun_skips_unchanged_series_and_redoes_changed_ones(shared_data: Path, tmp_path: Path) -> None:
    series = tmp_path / "ws" / "datasets" / "small" / "series"
    for vendor in ("hitachi", "ge"):
        shutil.copytree(shared_data / "dicom2nifti" / "tests" / "data" / vendor / "anatomical" / "001",
                        series / vendor)
    params = {"dataset": "small", "split": "train", "workers": 1, "seed": 0}
    ctx = StageContext.for_folder(tmp_path / "ws")
    run(params, ctx)
    out = ctx.workspace.converted("small", "train")
    first = (out / "images" / "ge_0000.nii.gz").stat().st_mtime_ns

    def converted_now(ctx: StageContext) -> str:
        return next(e["message"] for e in ctx.reporter.of_type("log") if e["message"].startswith("converting"))

    again = StageContext.for_folder(tmp_path / "ws", job_id="again")
    run(params, again)
    assert converted_now(again).startswith("converting 0 of 2 series")
    assert (out / "images" / "ge_0000.nii.gz").stat().st_mtime_ns == first
    assert pd.read_csv(out / "conversion.csv")["status"].tolist() == ["converted", "converted"]

    touched = sorted((series / "hitachi").iterdir())[0]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    (out / "images" / "ge_0000.nii.gz").unlink()
    third = StageContext.for_folder(tmp_path / "ws", job_id="third")
    run(params, third)
    assert converted_now(third).startswith("converting 2 of 2 series")  # one changed, one lost its output
    shutil.rmtree(series / "hitachi")
    fourth = StageContext.for_folder(tmp_path / "ws", job_id="fourth")
    run(params, fourth)
    assert converted_now(fourth).startswith("converting 0 of 1 series")
    assert not (out / "images" / "hitachi_0000.nii.gz").exists()  # outputs of a removed series go too


def test_implausible_spacing_is_flagged(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ws" / "datasets" / "odd" / "series" / "hitachi.tiny_pixels"
    folder.mkdir(parents=True)
    for path in sorted((shared_data / "dicom2nifti" / "tests" / "data" / "hitachi" / "anatomical" / "001").iterdir()):
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = ["0.001", "0.001"]
        ds.save_as(folder / path.name, enforce_file_format=True)
    ctx = StageContext.for_folder(tmp_path / "ws")
    run({"dataset": "odd", "split": "train", "workers": 1, "seed": 0}, ctx)
    row = pd.read_csv(ctx.workspace.converted("odd", "train") / "conversion.csv").iloc[0]
    assert row["status"] == "converted" and "implausible voxel spacing" in row["notes"]


def test_dicom2nifti_settings_are_set_per_attempt_and_restored(shared_data: Path) -> None:
    """dicom2nifti's settings are module globals: a fallback must neither leak nor inherit them."""
    from dicom2nifti import settings

    folder = shared_data / "dicom2nifti" / "tests" / "data" / "failing" / "gantrytilting" / "001"
    settings.disable_validate_slicecount()  # a caller's own choice, to be left as it was
    try:
        volume = load_series(sorted(folder.iterdir()))
        assert volume.fallback == "resampled"
        assert (settings.validate_slicecount, settings.resample, settings.validate_orthogonal,
                settings.resample_spline_interpolation_order) == (False, False, True, 0)
        with pytest.raises(RuntimeError), dicom2nifti_settings(RESAMPLE):
            assert settings.resample and not settings.validate_orthogonal
            raise RuntimeError("a failing conversion")
        assert settings.resample is False and settings.validate_orthogonal is True
    finally:
        settings.enable_validate_slicecount()
