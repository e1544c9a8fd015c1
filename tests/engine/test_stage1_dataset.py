"""stage1-data: the 2D vessel-box dataset, its labels, and nnU-Net's own integrity check.

Inputs are written here in the converted layout (LPS NIfTI via nibabel): small synthetic heads with
a bright vessel tree, and a real TopCoW vessel-label crop, because the conversion stage and the
demo cohort are built elsewhere.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from engine.context import StageContext
from engine.stage1 import dataset as stage1_dataset
from engine.stage1.slices import box_of, inference_positions, read_volume
from engine.stages import get_stage

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_lps(path: Path, array_zyx: np.ndarray, spacing_zyx, dtype=np.float32) -> None:
    """Write a (z, y, x) array as converted NIfTI: data (x, y, z), axis codes L, P, S."""
    affine = LPS @ np.diag([*spacing_zyx[::-1], 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(array_zyx.transpose(2, 1, 0)).astype(dtype), affine)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def synthetic_head(rng: np.random.Generator, shape=(40, 48, 48)) -> tuple[np.ndarray, np.ndarray, list]:
    """A noisy ellipsoid 'head' with a bright vessel tree inside a random sub-box.

    Returns image, vessel labels (1..13) and two localizer points (z, y, x) on the vessels.
    """
    z, y, x = np.indices(shape, dtype=np.float32)
    c = np.array(shape, dtype=np.float32) / 2
    head = ((z - c[0]) / (0.45 * shape[0])) ** 2 + ((y - c[1]) / (0.45 * shape[1])) ** 2 \
        + ((x - c[2]) / (0.45 * shape[2])) ** 2 <= 1
    image = np.where(head, 200 + 20 * rng.standard_normal(shape), 0).astype(np.float32)
    vessels = np.zeros(shape, dtype=np.uint8)
    lo = [int(rng.integers(0.25 * n, 0.4 * n)) for n in shape]
    hi = [int(rng.integers(0.6 * n, 0.75 * n)) for n in shape]
    mid = [(a + b) // 2 for a, b in zip(lo, hi)]
    # a trunk along z and branches along y and x, 2 voxels thick, spanning the sub-box
    vessels[lo[0]:hi[0], mid[1]:mid[1] + 2, mid[2]:mid[2] + 2] = 2
    vessels[mid[0]:mid[0] + 2, lo[1]:hi[1], mid[2]:mid[2] + 2] = 9
    vessels[mid[0]:mid[0] + 2, mid[1]:mid[1] + 2, lo[2]:hi[2]] = 13
    image[vessels > 0] = 600 + 30 * rng.standard_normal(int((vessels > 0).sum()))
    points = [(mid[0], lo[1] + 2, mid[2]), (mid[0], mid[1], hi[2] - 3)]
    return image, vessels, points


def write_cohort(converted: Path, n: int, seed: int = 0, shape=(40, 48, 48), spacing=(1.0, 0.8, 0.8),
                 with_vessels: bool = True) -> dict[str, list]:
    """n synthetic series in the converted layout (+ localizers_voxel.csv); returns uid -> points."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for i in range(n):
        uid = f"1.2.826.0.1.{seed}.{i}"
        image, vessels, points = synthetic_head(rng, shape)
        write_lps(converted / "images" / f"{uid}_0000.nii.gz", image, spacing)
        write_lps(converted / "masks" / f"{uid}.nii.gz", np.zeros(shape, np.uint8), spacing, np.uint8)
        if with_vessels:
            write_lps(converted / "vessels" / f"{uid}.nii.gz", vessels, spacing, np.uint8)
        truth[uid] = points
        for k, (pz, py, px) in enumerate(points):
            rows.append({"SeriesInstanceUID": uid, "SOPInstanceUID": f"{uid}.{pz}", "location": "Basilar Tip",
                         "label": 25, "x_mm": px * spacing[2], "y_mm": py * spacing[1], "z_mm": pz * spacing[0],
                         "i": px, "j": py, "k": pz})
    with (converted / "localizers_voxel.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return truth


def test_slices_and_labels_follow_the_vessel_box(workspace: Path) -> None:
    ctx = StageContext.for_folder(workspace)
    converted = ctx.workspace.converted("demo", "train")
    write_cohort(converted, 3, shape=(40, 48, 44))
    params = get_stage("stage1-data").resolve("tiny", {"jitter": 1, "spacing": "1,1"})
    stage1_dataset.run(params, ctx)

    raw = ctx.workspace.nnunet_raw / "Dataset101_VesselBox2D"
    assert ctx.reporter.artefacts["dataset"] == str(raw)
    info = json.loads((raw / "dataset.json").read_text())
    images = sorted((raw / "imagesTr").glob("*_0000.nii.gz"))
    assert info["numTraining"] == len(images) == len(list((raw / "labelsTr").glob("*.nii.gz")))
    # 3 inference positions + 1 jittered per axis, 3 axes, 3 series (no slice of these heads is empty)
    assert len(images) == 3 * 3 * 4

    uid = "1.2.826.0.1.0.0"
    _, spacing = read_volume(converted / "images" / f"{uid}_0000.nii.gz")
    vessels, _ = read_volume(converted / "vessels" / f"{uid}.nii.gz", np.uint8)
    box = box_of(vessels > 0)
    for axis, name in enumerate("zyx"):
        for position in inference_positions(vessels.shape[axis]):
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{uid}_{name}{position:04d}.nii.gz")))
            assert label.shape[0] == 1
            rows_axis, cols_axis = [a for a in range(3) if a != axis]
            inside = box[axis][0] <= position < box[axis][1]
            assert label.any() == inside
            if inside:
                # a filled rectangle whose extent is the vessel box scaled to the 1 mm target spacing
                got = box_of(label[0])
                assert label[0][slice(*got[0]), slice(*got[1])].all()
                for (lo, hi), axis_ in zip(got, (rows_axis, cols_axis)):
                    scale = spacing[axis_] / 1.0
                    assert abs(lo - box[axis_][0] * scale) <= 1 and abs(hi - box[axis_][1] * scale) <= 1
    image = sitk.ReadImage(str(raw / "imagesTr" / f"{uid}_z0020_0000.nii.gz"))
    assert image.GetSpacing() == (1.0, 1.0, 999.0)
    data = sitk.GetArrayFromImage(image)
    assert data.shape == (1, round(48 * 0.8), round(44 * 0.8))
    assert abs(float(data.mean())) < 0.1 and 0.8 < float(data.std()) < 1.1

    splits = json.loads((raw / "splits_final.json").read_text())
    for split in splits:  # slices of one series never on both sides
        train_series = {c.rsplit("_", 1)[0] for c in split["train"]}
        assert not train_series & {c.rsplit("_", 1)[0] for c in split["val"]}


def test_real_topcow_crop_passes_nnunet_integrity_check(workspace: Path, shared_data: Path) -> None:
    """A real CoW label crop as vessel mask, with a CTA-like image, through nnU-Net's own verifier."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    ctx = StageContext.for_folder(workspace)
    converted = ctx.workspace.converted("real", "train")
    labels = nib.load(str(shared_data / "TopCoW_Eval_Metrics/test_assets/seg_metrics/topcow_roi/topcow_ct_roi_003.nii.gz"))
    vessels = np.asarray(labels.dataobj).transpose(2, 1, 0).astype(np.uint8)
    spacing = labels.header.get_zooms()[:3][::-1]
    # pad the crop into a larger field of view so the vessel box is a part of each slice
    padded = np.pad(vessels, ((6, 6), (12, 12), (12, 12)))
    rng = np.random.default_rng(1)
    image = np.where(padded > 0, 400.0, 40.0) + 10 * rng.standard_normal(padded.shape)
    write_lps(converted / "images" / "1.2.3_0000.nii.gz", image, spacing)
    write_lps(converted / "vessels" / "1.2.3.nii.gz", padded, spacing, np.uint8)
    write_cohort(converted, 1, seed=5)

    stage1_dataset.run(get_stage("stage1-data").resolve("tiny", {"dataset": "real"}), ctx)
    raw = ctx.workspace.nnunet_raw / "Dataset101_VesselBox2D"
    verify_dataset_integrity(str(raw), num_processes=1)  # raises on any problem
    assert ctx.reporter.metrics("series") == [2.0]
    assert 0 < ctx.reporter.metrics("positive_fraction")[0] < 1


def test_missing_vessels_is_a_clear_error(workspace: Path) -> None:
    ctx = StageContext.for_folder(workspace)
    write_cohort(ctx.workspace.converted("demo", "train"), 1, with_vessels=False)
    with pytest.raises(FileNotFoundError, match="vessels"):
        stage1_dataset.run(get_stage("stage1-data").resolve("tiny"), ctx)
