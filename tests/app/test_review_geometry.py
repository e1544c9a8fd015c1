"""Geometry of the review pictures, checked against numbers computed here from the DICOM tags.

* The localizer ring of ``rsna-tui review --png`` lies on the voxel computed from the slice's
  ImagePositionPatient / ImageOrientationPatient / PixelSpacing and the saved volume's affine.
* The yellow stage-1 box outline spans the voxel ranges of ``case.json``.
* For a series and its left-right mirror, the ring is on the side whose letter names the patient's side
  of the point (radiological: R on the screen's left; neurological mirrors both).
* ``volume.nii`` is the converted volume; decoder maps are placed by their affines; the jump to the
  strongest aneurysm response lands on the map voxel's place in the volume.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from rsna_tui.review.render import BOX_COLOUR, POINT_COLOUR, letters
from rsna_tui.review.viewer import Viewer
from rsna_tui.review.volume import load_case
from rsna_tui.review.windows import Window
from tests.app.review_job import ReviewJob, mirrored_name

REPO = Path(__file__).resolve().parents[2]
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def dicom_points(job: ReviewJob, uid: str) -> list[tuple[str, np.ndarray]]:
    """(location, LPS mm) of each localizer of ``uid``, from its slice's DICOM tags alone."""
    table = pd.read_csv(job.dataset / "train_localizers.csv", dtype=str)
    points = []
    for _, row in table[table["SeriesInstanceUID"] == uid].iterrows():
        ds = pydicom.dcmread(job.dataset / "series" / uid / f"{row['SOPInstanceUID']}.dcm", stop_before_pixels=True)
        xy = ast.literal_eval(row["coordinates"])
        position = np.array(ds.ImagePositionPatient, dtype=float)
        orientation = np.array(ds.ImageOrientationPatient, dtype=float)
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        lps = position + xy["x"] * col_spacing * orientation[:3] + xy["y"] * row_spacing * orientation[3:]
        points.append((row["location"], lps))
    return points


def voxel_of(affine: np.ndarray, lps: np.ndarray) -> np.ndarray:
    return (np.linalg.inv(affine) @ np.r_[LPS_TO_RAS @ lps, 1.0])[:3]


def png_of(job: ReviewJob, uid: str, *args: str, out: Path) -> tuple[np.ndarray, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-m", "rsna_tui", "--workspace", str(job.workspace), "review",
                             "--case", uid, "--png", str(out), "--json", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return np.asarray(Image.open(out).convert("RGB")), json.loads(result.stdout)["picture"]


def colour_mask(rgb: np.ndarray, colour: tuple[int, int, int], box: list[int]) -> np.ndarray:
    """Where the picture (inside ``box`` = x, y, w, h) has exactly ``colour``; full-image coordinates."""
    x, y, w, h = box
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    mask[y:y + h, x:x + w] = np.all(rgb[y:y + h, x:x + w] == colour, axis=-1)
    return mask


def ring_centre(mask: np.ndarray, near: tuple[float, float], reach: float) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    close = np.hypot(ys - near[0], xs - near[1]) <= reach
    assert close.sum() > 8, f"no marker near {near}"
    return float(ys[close].mean()), float(xs[close].mean())


def expected_pixel(layout: dict, row: float, col: float) -> tuple[float, float]:
    x0, y0 = layout["image_box"][:2]
    scale_y, scale_x = layout["scale"]
    return y0 + (row + 0.5) * scale_y - 0.5, x0 + (col + 0.5) * scale_x - 0.5


def test_localizer_marker_and_box_outline_where_the_tags_and_case_json_say(review_job: ReviewJob,
                                                                           tmp_path: Path) -> None:
    uid = review_job.original
    folder = review_job.predictions / "cases" / uid
    affine = nib.load(folder / "volume.nii").affine
    location, lps = dicom_points(review_job, uid)[0]
    i, j, k = voxel_of(affine, lps)
    rgb, layout = png_of(review_job, uid, "--plane", "axial", "--slice", str(round(k)), out=tmp_path / "axial.png")
    assert layout["slice"] == round(k) and layout["letters"] == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    # axial, radiological: rows follow j (anterior up), columns follow i (patient right on the left)
    y, x = expected_pixel(layout, j, i)
    found = ring_centre(colour_mask(rgb, POINT_COLOUR, layout["image_box"]), (y, x), reach=layout["scale"][0] * 1.5)
    assert found == pytest.approx((y, x), abs=1.0), location
    assert np.all(rgb[round(y), round(x)] == POINT_COLOUR)  # the centre dot

    box = json.loads((folder / "case.json").read_text())["box"]
    ys, xs = np.nonzero(colour_mask(rgb, BOX_COLOUR, layout["image_box"]))
    top, left = expected_pixel(layout, box["y0"] - 0.5, box["x0"] - 0.5)  # outer edge of the first voxel
    bottom, right = expected_pixel(layout, box["y1"] - 0.5, box["x1"] - 0.5)
    assert ys.min() == pytest.approx(top + 0.5, abs=1) and xs.min() == pytest.approx(left + 0.5, abs=1)
    assert ys.max() == pytest.approx(bottom - 0.5, abs=1) and xs.max() == pytest.approx(right - 0.5, abs=1)
    hidden, layout_hidden = png_of(review_job, uid, "--slice", str(round(k)), "--hide", "box", "--hide", "points",
                                   "--hide", "box", out=tmp_path / "hidden.png")
    assert layout_hidden["overlays"] == ["aneurysm", "vessels"]
    assert not colour_mask(hidden, BOX_COLOUR, layout["image_box"]).any()
    assert not colour_mask(hidden, POINT_COLOUR, layout["image_box"]).any()
    # outside the box's slices there is no outline
    if box["z1"] < nib.load(folder / "volume.nii").shape[2]:
        rgb_out, layout_out = png_of(review_job, uid, "--slice", str(box["z1"]), out=tmp_path / "outside.png")
        assert not colour_mask(rgb_out, BOX_COLOUR, layout_out["image_box"]).any()


@pytest.mark.parametrize("convention", ["radiological", "neurological"])
def test_mirror_marker_is_on_the_side_its_letter_says(review_job: ReviewJob, tmp_path: Path, convention: str) -> None:
    sides = {}
    for uid in (review_job.original, review_job.mirror):
        folder = review_job.predictions / "cases" / uid
        volume = nib.load(folder / "volume.nii")
        centre_lps = LPS_TO_RAS @ (volume.affine @ np.r_[(np.asarray(volume.shape) - 1) / 2, 1.0])[:3]
        for location, lps in dicom_points(review_job, uid):
            i, j, k = voxel_of(volume.affine, lps)
            if abs(i - (volume.shape[0] - 1) / 2) < 2:
                continue  # on the midline: no side to check (AComm)
            rgb, layout = png_of(review_job, uid, "--slice", str(round(k)), "--convention", convention,
                                 out=tmp_path / f"{uid}_{round(k)}.png")
            x0, _, width, _ = layout["image_box"]
            near = expected_pixel(layout, j, i if convention == "radiological" else volume.shape[0] - 1 - i)
            _, x = ring_centre(colour_mask(rgb, POINT_COLOUR, layout["image_box"]), near, layout["scale"][0] * 1.5)
            screen_side = "left" if x < x0 + width / 2 else "right"
            patient_side = "L" if lps[0] > centre_lps[0] else "R"  # LPS: x grows toward the patient's left
            assert layout["letters"][screen_side] == patient_side, (uid, location)
            sides[uid, location] = screen_side
    # each lateral point of the original is drawn on the other side in the mirror (its name mirrored too)
    pairs = [(side, sides.get((review_job.mirror, mirrored_name(location))))
             for (uid, location), side in sides.items() if uid == review_job.original and location != mirrored_name(location)]
    assert pairs and all(mirror is not None and side != mirror for side, mirror in pairs)
    assert letters("axial", convention)["left"] == ("R" if convention == "radiological" else "L")


@pytest.mark.parametrize("plane", ["coronal", "sagittal"])
def test_coronal_and_sagittal_planes_put_superior_up(review_job: ReviewJob, plane: str) -> None:
    """The ring of a point in the plane through it, at the pixel given by the plane's own layout:
    rows from superior (last k) down, columns i (coronal, patient right first) or j (sagittal, anterior first)."""
    folder = review_job.predictions / "cases" / review_job.original
    case = load_case(folder)
    location, lps = dicom_points(review_job, review_job.original)[0]
    i, j, k = voxel_of(case.affine, lps)
    viewer = Viewer(case, "CTA", plane=plane)
    viewer.jump((i, j, k))
    picture = viewer.picture(plane, 320, 320)
    assert picture.letters["top"] == "S" and picture.letters["bottom"] == "I"
    row, col = case.shape[2] - 1 - k, (i if plane == "coronal" else j)
    height, width = picture.rgb.shape[:2]
    scale_y, scale_x = height / case.shape[2], width / case.shape[0 if plane == "coronal" else 1]
    near = ((row + 0.5) * scale_y - 0.5, (col + 0.5) * scale_x - 0.5)
    found = ring_centre(np.all(picture.rgb == POINT_COLOUR, axis=-1), near, reach=2 * max(scale_x, scale_y))
    assert found == pytest.approx(near, abs=1.0), location


def test_volume_is_the_converted_series_and_maps_sit_by_their_affines(review_job: ReviewJob) -> None:
    from engine.inference.review import CASE_FILE
    from engine.inference.review_extras import LOCALIZERS_FILE, VOLUME_FILE
    from engine.inference.series import load
    from rsna_tui.review import volume as review_volume

    assert (review_volume.CASE_FILE, review_volume.VOLUME_FILE, review_volume.LOCALIZERS_FILE) == (
        CASE_FILE, VOLUME_FILE, LOCALIZERS_FILE)
    uid = review_job.original
    folder = review_job.predictions / "cases" / uid
    converted = load(review_job.dataset / "series" / uid)
    saved = nib.load(folder / "volume.nii")
    assert saved.get_data_dtype() == np.int16  # lossless for DICOM pixels
    np.testing.assert_array_equal(np.asarray(saved.dataobj), converted.volumes[0].transpose(2, 1, 0))
    np.testing.assert_allclose(saved.affine, converted.affine)

    case = load_case(folder)
    record = json.loads((folder / "case.json").read_text())
    box, size = record["box"], record["segmentations"]["network_size"]
    factor = record["segmentations"]["factor"]
    seg2 = np.asarray(nib.load(folder / "seg2.nii.gz").dataobj)
    ijk = np.stack(np.meshgrid(*[np.arange(box[f"{a}0"], box[f"{a}1"]) for a in "xyz"], indexing="ij"), -1)
    index = np.empty_like(ijk)
    for axis, name in enumerate("xyz"):  # review grid index n lies at voxel start + n * (L - 1) / (size - 1) * factor
        length = box[f"{name}1"] - box[f"{name}0"]
        step = (length - 1) / (size - 1) * factor
        index[..., axis] = np.rint((ijk[..., axis] - box[f"{name}0"]) / step)
    np.testing.assert_array_equal(case.sample_map("seg2", ijk.astype(float)),
                                  seg2[index[..., 0], index[..., 1], index[..., 2]])


def test_jump_to_the_strongest_aneurysm_response(review_job: ReviewJob, tmp_path: Path) -> None:
    source = review_job.predictions / "cases" / review_job.original
    folder = tmp_path / "case"
    shutil.copytree(source, folder)
    seg1 = nib.load(folder / "seg1.nii.gz")
    data = np.zeros(seg1.shape, dtype=np.uint8)
    data[20:23, 5:8, 9:12] = 14  # a 3^3 aneurysm blob centred on review voxel (21, 6, 10)
    data[2, 2, 2] = 14  # a lone voxel: weaker
    nib.save(nib.Nifti1Image(data, seg1.affine), folder / "seg1.nii.gz")
    viewer = Viewer(load_case(folder), "CTA")
    assert viewer.strongest().startswith("strongest")
    expected = np.rint(np.linalg.inv(viewer.case.affine) @ seg1.affine @ [21, 6, 10, 1])[:3]
    assert viewer.cursor == [int(v) for v in expected]
    viewer.plane = "coronal"
    assert viewer.index() == int(expected[1])
    assert viewer.point_index == 0  # it opened on the first truth point
    assert viewer.next_point().startswith(f"truth point {min(2, len(viewer.case.points))}/{len(viewer.case.points)}")


def test_window_presets_by_modality(review_job: ReviewJob) -> None:
    case = load_case(review_job.predictions / "cases" / review_job.original)
    cta = Viewer(case, "CTA")
    assert [w.name for w in cta.windows] == ["angio", "brain", "bone"] and cta.window == Window(200, 700, "angio")
    mr = Viewer(case, "MRI T2")
    stats = case.stats()
    assert mr.window.name == "p1-p99" and mr.window.width == pytest.approx(stats["p99"] - stats["p1"])
    narrower = mr.adjust(width_steps=-1)
    assert narrower.width == pytest.approx(mr.windows[0].width / 1.25) and narrower.name == "manual"
    with pytest.raises(ValueError, match="presets: angio"):
        cta.choose_window("p1-p99")
