"""Tests of the demo cohort (stage ``demo-data``): layout, counts, DICOM geometry, determinism.

Most tests read the session's ``demo_cohort`` (12 series of 32^2 pixels, see tests/conftest.py);
geometry is checked against what a reader gets from the files alone (pydicom tags, dicom2nifti),
and against the generator's own truth (``aneurysms.csv``) only where nothing else knows it.
"""
from __future__ import annotations

import ast
import csv
import tempfile
from collections import Counter
from pathlib import Path

import dicom2nifti
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom2nifti.convert_dicom import dicom_array_to_nifti

from tests.conftest import DEMO_COHORT_PARAMS
from engine.context import StageContext
from engine.data.cohort_plan import (DEFECTS, LOCATION_COUNTS, MODALITY_COUNTS, apportion, expected_positives,
                                     plan_cohort)
from engine.data.demo import run
from engine.data.dicom_writer import TEST_ALLOWED_TAGS
from engine.labels import LOCALIZER_COLUMNS, LOCATION_TO_VESSEL, LOCATIONS, MODALITIES, TRAIN_COLUMNS, VESSELS
from engine.stages import get_stage


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return next(csv.reader(handle))


def _series_folder(root: Path, row: dict[str, str]) -> Path:
    return root / ("test/series" if row["split"] == "test" else "series") / row["SeriesInstanceUID"]


def _convert(folder: Path) -> nib.Nifti1Image:
    with tempfile.TemporaryDirectory() as tmp:
        result = dicom2nifti.dicom_series_to_nifti(str(folder), str(Path(tmp) / "x.nii.gz"), reorient_nifti=False)
        img = result["NII"]
        return nib.Nifti1Image(np.asarray(img.dataobj), img.affine)


def _pixel_to_lps(ds: pydicom.Dataset, x: float, y: float, frame: int | None) -> np.ndarray:
    """Pixel (column x, row y) of a slice or frame -> LPS mm, from the file's own tags."""
    if frame is None:
        ipp, iop, spacing = ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing
    else:
        shared = ds.SharedFunctionalGroupsSequence[0]
        ipp = ds.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0].ImagePositionPatient
        iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
        spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    row_dir, col_dir = np.array(iop[:3], float), np.array(iop[3:], float)
    return np.array(ipp, float) + x * float(spacing[1]) * row_dir + y * float(spacing[0]) * col_dir


def test_tables_have_competition_headers_and_planned_counts(demo_cohort: Path) -> None:
    assert _header(demo_cohort / "train.csv") == list(TRAIN_COLUMNS)
    assert _header(demo_cohort / "test_truth.csv") == list(TRAIN_COLUMNS)
    assert _header(demo_cohort / "train_localizers.csv") == list(LOCALIZER_COLUMNS)
    train, test = _rows(demo_cohort / "train.csv"), _rows(demo_cohort / "test_truth.csv")
    rows = train + test
    n = DEMO_COHORT_PARAMS["n"]
    assert len(rows) == n and len({r["SeriesInstanceUID"] for r in rows}) == n
    assert len(test) == 3  # 25 % of 5 positives and of 7 negatives, each rounded
    counts = Counter(r["Modality"] for r in rows)
    expected = dict(zip(MODALITY_COUNTS, apportion(n, list(MODALITY_COUNTS.values()))))
    assert counts == Counter({m: c for m, c in expected.items() if c})
    for modality in MODALITIES:
        positives = sum(r["Aneurysm Present"] == "1" for r in rows if r["Modality"] == modality)
        assert positives == expected_positives(expected[modality], modality), modality
    for r in rows:
        assert r["PatientSex"] in ("Female", "Male") and 18 <= int(r["PatientAge"]) <= 89
        assert r["Aneurysm Present"] == str(int(any(r[loc] == "1" for loc in LOCATIONS)))
    assert {r["Aneurysm Present"] for r in test} == {"0", "1"}

    localizers = _rows(demo_cohort / "train_localizers.csv")
    by_series = Counter(r["SeriesInstanceUID"] for r in localizers)
    for r in train:
        flagged = {loc for loc in LOCATIONS if r[loc] == "1"}
        assert by_series[r["SeriesInstanceUID"]] == len(flagged)
        assert {l["location"] for l in localizers if l["SeriesInstanceUID"] == r["SeriesInstanceUID"]} == flagged
    test_uids = {r["SeriesInstanceUID"] for r in test}
    assert not test_uids & set(by_series), "held-out series must not leak localizers"
    assert {p.parent.name for p in (demo_cohort / "test" / "series").glob("*/*.dcm")} == test_uids


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_held_out_split_can_be_scored(seed: int) -> None:
    """Every location column of the default cohort's test split has both classes (metric defined)."""
    plans = [p for p in plan_cohort(40, seed, 0.25, False, ("score test",)) if p.split == "test"]
    for loc in range(len(LOCATIONS)):
        assert any(loc in p.locations for p in plans), LOCATIONS[loc]
        assert any(loc not in p.locations for p in plans), LOCATIONS[loc]
    assert all(1 <= len(p.locations) <= 5 for p in plans if p.positive)


def test_cohort_plan_follows_competition_frequencies() -> None:
    plans = plan_cohort(3000, 5, 0.2, False, ("frequency test",))
    counts = Counter(p.modality for p in plans)
    assert [counts[m] for m in MODALITY_COUNTS] == apportion(3000, list(MODALITY_COUNTS.values()))
    positives = [p for p in plans if p.positive]
    assert abs(len(positives) / 3000 - 1893 / 4405) < 0.01
    per_series = Counter(len(p.locations) for p in positives)
    assert 0.82 < per_series[1] / len(positives) < 0.92 and per_series[2] > per_series[3] > 0
    location_counts = Counter(loc for p in positives for loc in p.locations)
    expected = np.array(LOCATION_COUNTS) / sum(LOCATION_COUNTS)
    observed = np.array([location_counts[i] for i in range(len(LOCATIONS))]) / sum(location_counts.values())
    assert np.abs(observed - expected).max() < 0.02
    assert max(location_counts, key=location_counts.get) in (2, 6)  # L supraclinoid ICA or AComm
    assert sum(p.split == "test" for p in plans) == pytest.approx(600, abs=2)
    kinds = Counter(p.orientation for p in plans)
    assert kinds["axial"] > 0.7 * 3000 and kinds["sagittal"] > 100 and kinds["coronal"] > 100
    assert 0.03 < sum(p.multiframe for p in plans) / 3000 < 0.09


def test_every_series_converts_with_its_written_shape_and_spacing(demo_cohort: Path) -> None:
    series = _rows(demo_cohort / "demo_series.csv")
    assert {r["orientation"] for r in series} == {"axial", "sagittal", "coronal"}
    assert any(r["reversed"] == "1" for r in series) and any(r["multiframe"] == "1" for r in series)
    for r in series:
        img = _convert(_series_folder(demo_cohort, r))
        assert img.shape == (int(r["cols"]), int(r["rows"]), int(r["slices"])), r
        spacing = (float(r["col_spacing"]), float(r["row_spacing"]), float(r["slice_spacing"]))
        assert np.allclose(img.header.get_zooms()[:3], spacing, atol=1e-3), r
        assert float(r["slice_spacing"]) != pytest.approx(float(r["col_spacing"]), abs=0.05)  # anisotropic
        if r["segmentation"] != "1":
            continue
        uid = r["SeriesInstanceUID"]
        image = nib.as_closest_canonical(nib.load(demo_cohort / "segmentations" / uid / f"{uid}.nii"))
        seg = nib.as_closest_canonical(nib.load(demo_cohort / "segmentations" / uid / f"{uid}_cowseg.nii"))
        converted = nib.as_closest_canonical(img)
        assert np.allclose(image.affine, converted.affine, atol=1e-3), uid
        assert np.array_equal(image.get_fdata(), converted.get_fdata()), uid
        assert np.allclose(seg.affine, converted.affine, atol=1e-3) and seg.shape == converted.shape
        labels = np.unique(np.asarray(seg.dataobj))
        assert labels.min() == 0 and labels.max() <= len(VESSELS) and len(labels) >= 10, (uid, labels)


def test_localizers_land_inside_their_aneurysm_on_the_correct_side(demo_cohort: Path) -> None:
    series = {r["SeriesInstanceUID"]: r for r in _rows(demo_cohort / "demo_series.csv")}
    truth = {(r["SeriesInstanceUID"], r["location"]): r for r in _rows(demo_cohort / "aneurysms.csv")}
    kinds = set()
    for loc in _rows(demo_cohort / "train_localizers.csv"):
        info = series[loc["SeriesInstanceUID"]]
        coordinates = ast.literal_eval(loc["coordinates"])
        frame = coordinates.get("f")
        assert (frame is not None) == (info["multiframe"] == "1")
        ds = pydicom.dcmread(demo_cohort / "series" / loc["SeriesInstanceUID"] / f"{loc['SOPInstanceUID']}.dcm")
        point = _pixel_to_lps(ds, coordinates["x"], coordinates["y"], frame)

        sac = truth[(loc["SeriesInstanceUID"], loc["location"])]
        centre = np.array([float(sac["x_mm"]), float(sac["y_mm"]), float(sac["z_mm"])])
        assert np.linalg.norm(point - centre) < float(sac["radius_mm"]), (loc, info)
        side = float(sac["side_mm"])
        if loc["location"].startswith("Left"):
            assert side > 0, loc
        elif loc["location"].startswith("Right"):
            assert side < 0, loc
        kinds |= {info["orientation"], "reversed" * (info["reversed"] == "1"),
                  "multiframe" * (info["multiframe"] == "1")}

        if info["segmentation"] != "1":
            continue
        # The same point through the segmentation's own affine: the sac (labelled as its parent
        # vessel) is there, and the patient's left is where the left vessels are.
        uid = loc["SeriesInstanceUID"]
        seg = nib.load(demo_cohort / "segmentations" / uid / f"{uid}_cowseg.nii")
        labels = np.asarray(seg.dataobj)
        ras = point * np.array([-1.0, -1.0, 1.0])
        ijk = np.rint(np.linalg.inv(seg.affine) @ np.append(ras, 1.0))[:3].astype(int)
        near = labels[tuple(slice(max(c - 1, 0), c + 2) for c in ijk)]
        assert LOCATION_TO_VESSEL[LOCATIONS.index(loc["location"])] in near, (loc, info)
        if abs(side) > 8.0:
            world = nib.affines.apply_affine(seg.affine, np.argwhere(labels > 0)) * np.array([-1.0, -1.0, 1.0])
            values = labels[labels > 0]
            left_labels = [VESSELS.index(v) + 1 for v in VESSELS if v.startswith("Left")]
            right_labels = [VESSELS.index(v) + 1 for v in VESSELS if v.startswith("Right")]
            left = world[np.isin(values, left_labels)].mean(axis=0)
            right = world[np.isin(values, right_labels)].mean(axis=0)
            assert left[0] > right[0] + 10.0, uid  # LPS: the patient's left is +x
            assert np.sign((point - (left + right) / 2) @ (left - right)) == np.sign(side), (loc, info)
    assert {"axial", "sagittal", "coronal", "reversed", "multiframe"} <= kinds


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    params = {"n": 5, "seed": 11, "size": 16, "test_fraction": 0.2, "defects": False, "test_tags_only": False}
    folders = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        run({**params, "seed": seed, "out": str(tmp_path / name)}, StageContext.for_folder(tmp_path / "ws"))
        folders.append(tmp_path / name)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a, b, c = (files(f) for f in folders)
    assert a == b
    assert a["train.csv"] != c["train.csv"]
    pixels_a = sorted(pydicom.dcmread(folders[0] / p).PixelData for p in a if p.endswith(".dcm"))
    pixels_c = sorted(pydicom.dcmread(folders[2] / p).PixelData for p in c if p.endswith(".dcm"))
    assert pixels_a != pixels_c


def test_test_tags_only_strips_the_held_out_split(tmp_path: Path) -> None:
    out = tmp_path / "stripped"
    params = {"n": 6, "seed": 3, "size": 16, "test_fraction": 0.5, "defects": False, "test_tags_only": True}
    run({**params, "out": str(out)}, StageContext.for_folder(tmp_path / "ws"))
    keep = TEST_ALLOWED_TAGS | {"PixelData", "NumberOfFrames"}
    for r in _rows(out / "demo_series.csv"):
        folder = _series_folder(out, r)
        datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
        keywords = {e.keyword for ds in datasets for e in ds}
        if r["split"] == "train":
            assert "SeriesInstanceUID" in keywords and "PatientAge" in keywords
            continue
        assert keywords <= keep, keywords - keep
        assert all(ds.file_meta.TransferSyntaxUID for ds in datasets)
        assert datasets[0].pixel_array.shape[-2:] == (int(r["rows"]), int(r["cols"]))
        if r["multiframe"] == "1":
            assert datasets[0].pixel_array.shape[0] == int(r["slices"])
            continue
        # What conversion must do with such files: dicom2nifti skips files without
        # SeriesInstanceUID, so it gets one in memory; the geometry itself is all there.
        for ds in datasets:
            ds.SeriesInstanceUID = r["SeriesInstanceUID"]
        with tempfile.TemporaryDirectory() as tmp:
            img = dicom_array_to_nifti(datasets, str(Path(tmp) / "x.nii"), reorient_nifti=False)["NII"]
        assert img.shape == (int(r["cols"]), int(r["rows"]), int(r["slices"]))


def test_defects_are_broken_as_listed(demo_cohort_with_defects: Path) -> None:
    root = demo_cohort_with_defects
    assert _header(root / "defects.csv") == ["SeriesInstanceUID", "defect"]
    listed = {r["SeriesInstanceUID"]: r["defect"] for r in _rows(root / "defects.csv")}
    assert sorted(listed.values()) == sorted(DEFECTS)
    series = {r["SeriesInstanceUID"]: r for r in _rows(root / "demo_series.csv")}
    for uid, defect in listed.items():
        info = series[uid]
        assert info["split"] == "train" and info["defect"] == defect and info["multiframe"] == "0"
        files = sorted((root / "series" / uid).glob("*.dcm"))
        if defect == "missing_slice":
            assert len(files) == int(info["slices"]) - 1
        elif defect == "duplicate_position":
            positions = Counter(tuple(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient) for p in files)
            assert len(files) == int(info["slices"]) and max(positions.values()) == 2
        elif defect == "truncated_file":
            broken = 0
            for p in files:
                try:
                    pydicom.dcmread(p).pixel_array
                except Exception:
                    broken += 1
            assert broken == 1
        elif defect == "non_image_object":
            datasets = [pydicom.dcmread(p) for p in files]
            assert len(files) == int(info["slices"]) + 1
            assert [ds.Modality for ds in datasets if "PixelData" not in ds] == ["SR"]
            assert _convert(root / "series" / uid).shape[2] == int(info["slices"])  # dicom2nifti skips it
    healthy = [r for r in series.values() if not r["defect"] and r["split"] == "train"]
    assert healthy and all(r["defect"] == "" for r in healthy)


def test_stage_runs_from_the_table_registers_artefacts_and_is_idempotent(tmp_path: Path) -> None:
    stage = get_stage("demo-data")
    params = stage.resolve("tiny", {"n": 3, "size": 16, "test_fraction": 0.0})
    assert params["out"] == ""
    ctx = StageContext.for_folder(tmp_path / "ws")
    stage.load()(params, ctx)
    out = ctx.workspace.datasets / "demo"
    artefacts = ctx.reporter.artefacts
    assert artefacts["dataset"] == str(out) and artefacts["train_csv"] == str(out / "train.csv")
    assert all(Path(p).exists() for p in artefacts.values())
    assert ctx.reporter.of_type("progress")[-1]["done"] == 3
    stamp = (out / "train.csv").stat().st_mtime_ns
    again = StageContext.for_folder(tmp_path / "ws")
    stage.load()(params, again)
    assert (out / "train.csv").stat().st_mtime_ns == stamp
    assert any("already" in e["message"] for e in again.reporter.of_type("log"))
    assert not list(out.parent.glob(".demo.*")), "no temporary folder may remain"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a cohort")
    with pytest.raises(FileExistsError, match="not a demo cohort"):
        stage.load()({**params, "out": str(foreign)}, again)
    with pytest.raises(ValueError, match="test_fraction"):
        stage.load()({**params, "test_fraction": 1.0}, again)


def test_phantom_is_lateralised_and_sacs_sit_on_their_vessel() -> None:
    from engine.data.phantom import build_phantom, location_side

    rng = np.random.default_rng(0)
    for case in range(40):
        locations = tuple(sorted(rng.choice(len(LOCATIONS), size=1 + case % 3, replace=False)))
        phantom = build_phantom(np.random.default_rng([1, case]), locations)
        for tube in phantom.tubes:
            name = VESSELS[tube.label - 1]
            if name.startswith(("Left", "Right")):
                sign = 1 if name.startswith("Left") else -1
                assert sign * tube.points[:, 0].mean() > 1.5, (case, tube.name)  # head frame: +x = left
        present = {VESSELS[t.label - 1] for t in phantom.tubes}
        assert len(present) >= len(VESSELS) - 2 and "Basilar Tip" in present and "AComm" in present
        assert {a.location for a in phantom.aneurysms} == set(locations)
        for sac in phantom.aneurysms:
            parent = [t for t in phantom.tubes if t.label == LOCATION_TO_VESSEL[sac.location]]
            gap = min(np.linalg.norm(t.points - sac.centre, axis=1).min() for t in parent)
            assert gap < sac.radius + 3.0, (case, LOCATIONS[sac.location])
            side = phantom.side_mm(phantom.to_lps(sac.centre))
            assert location_side(sac.location) in (0, int(np.sign(side))), (case, LOCATIONS[sac.location])
