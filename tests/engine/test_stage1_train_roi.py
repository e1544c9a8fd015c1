"""train2d and roi end to end: demo cohort -> convert -> stage1-data -> tiny train2d -> roi.

One tiny CPU training (4 mm slices, 8-16-32 features; ``stage1_trained`` of ``tests/engine/conftest.py``)
is shared. Some positive series are held out of the 2D dataset (their vessel masks removed before
stage1-data), so the coverage check runs on localizers of volumes the model never saw. Then roi on
real scans, and a resume.
"""
from __future__ import annotations

import json
from pathlib import Path

import dicom2nifti
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from engine.context import StageContext
from engine.nnunet_runtime import load_predictor, read_checkpoint
from engine.stage1 import roi, train
from engine.stages import get_stage


@pytest.fixture(scope="module")
def trained(stage1_trained: dict) -> dict:
    """The module's tiny train2d (``tests/engine/conftest.py``)."""
    return stage1_trained


def test_tiny_training_learns_reports_and_leaves_an_nnunet_results_folder(trained: dict) -> None:
    reporter = trained["train"]
    epochs = get_stage("train2d").defaults("tiny")["epochs"]
    for name in ("train_loss", "val_loss", "pseudo_dice", "ema_pseudo_dice", "lr", "epoch_time"):
        steps = [e["step"] for e in reporter.of_type("metric") if e["name"] == name]
        assert steps == list(range(epochs)), name
    losses = reporter.metrics("train_loss")
    assert np.mean(losses[-3:]) < losses[0] - 0.1  # the loss goes down
    assert max(reporter.metrics("pseudo_dice")) > 0.3
    lrs = reporter.metrics("lr")
    assert lrs[0] == pytest.approx(0.01) and lrs == sorted(lrs, reverse=True)  # PolyLR
    assert reporter.of_type("progress")[-1]["done"] == epochs

    model, checkpoint = Path(reporter.artefacts["model"]), Path(reporter.artefacts["checkpoint"])
    assert model.name == "nnUNetTrainer__nnUNetPlans_f8-16-32_b4__2d" and checkpoint == model / "fold_0/checkpoint_final.pth"
    assert {"plans.json", "dataset.json", "dataset_fingerprint.json"} <= {p.name for p in model.iterdir()}
    plans = json.loads((model / "plans.json").read_text())["configurations"]["2d"]
    assert plans["batch_size"] == 4 and plans["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32]
    assert plans["spacing"] == [4.0, 4.0]
    state = read_checkpoint(checkpoint)  # weights_only=True
    assert state["trainer_name"] == "nnUNetTrainer" and state["current_epoch"] == epochs

    # nnU-Net's own predictor finds the trainer by name and loads the folder
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    import torch

    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=(0,))
    assert predictor.configuration_manager.patch_size == plans["patch_size"]


def test_roi_boxes_cover_held_out_localizers_and_crops_match(trained: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = StageContext.for_folder(trained["ctx"].workspace.root, job_id="roi")
    model = trained["train"].artefacts["model"]
    loads = []
    monkeypatch.setattr(roi, "load_predictor", lambda *a, **k: loads.append(a) or load_predictor(*a, **k))
    roi.run(get_stage("roi").resolve("tiny", {"dataset": trained["name"], "model": model, "device": "cpu"}), ctx)
    assert len(loads) == 1  # the model is loaded once per job, not per series
    out = ctx.workspace.rois(trained["name"], "train")
    table = pd.read_csv(out / "rois.csv", dtype={"SeriesInstanceUID": str}, keep_default_na=False)
    converted = trained["converted"]
    assert sorted(table["SeriesInstanceUID"]) == sorted(p.name[:-12] for p in (converted / "images").glob("*_0000.nii.gz"))
    assert ctx.reporter.artefacts == {"rois": str(out / "rois.csv"), "crops": str(out)}

    points = pd.read_csv(converted / "localizers_voxel.csv", dtype={"SeriesInstanceUID": str})
    rows = table.set_index("SeriesInstanceUID")
    inside = [rows.loc[p.SeriesInstanceUID, "z0"] <= p.k < rows.loc[p.SeriesInstanceUID, "z1"]
              and rows.loc[p.SeriesInstanceUID, "y0"] <= p.j < rows.loc[p.SeriesInstanceUID, "y1"]
              and rows.loc[p.SeriesInstanceUID, "x0"] <= p.i < rows.loc[p.SeriesInstanceUID, "x1"]
              for p in points.itertuples()]
    held = points["SeriesInstanceUID"].isin(trained["held_out"]).to_numpy()
    assert held.sum() >= 2
    assert np.mean(np.array(inside)[held]) >= 0.9
    assert ctx.reporter.metrics("coverage") == [pytest.approx(np.mean(inside))]
    modality = pd.read_csv(Path(trained["name"]) / "train.csv").set_index("SeriesInstanceUID")["Modality"]
    for m in modality[points["SeriesInstanceUID"]].unique():
        assert len(ctx.reporter.metrics("coverage_" + m.replace(" ", "_"))) == 1

    volume_fractions = []
    for uid, row in rows.iterrows():
        image = nib.load(converted / "images" / f"{uid}_0000.nii.gz")
        crop = nib.load(out / "images" / f"{uid}_0000.nii.gz")
        nx, ny, nz = image.shape
        assert 0 <= row.z0 < row.z1 <= nz and 0 <= row.y0 < row.y1 <= ny and 0 <= row.x0 < row.x1 <= nx
        assert crop.shape == (row.x1 - row.x0, row.y1 - row.y0, row.z1 - row.z0)
        # the crop's first voxel is the same place in the patient as the box corner
        np.testing.assert_allclose(crop.affine @ [0, 0, 0, 1], image.affine @ [row.x0, row.y0, row.z0, 1], atol=1e-4)
        np.testing.assert_array_equal(np.asanyarray(crop.dataobj),
                                      np.asanyarray(image.dataobj)[row.x0:row.x1, row.y0:row.y1, row.z0:row.z1])
        assert (out / "masks" / f"{uid}.nii.gz").exists()
        assert row.seconds > 0 and row.z1_mm > row.z0_mm
        volume_fractions.append(np.prod(crop.shape) / np.prod(image.shape))
    assert np.mean(volume_fractions) < 0.8  # real boxes, not whole-volume fallbacks
    assert (table["fallback"] == "").mean() >= 0.5


def _lps(img: nib.Nifti1Image) -> nib.Nifti1Image:
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                           nib.orientations.axcodes2ornt(("L", "P", "S")))
    return img.as_reoriented(ornt)


def test_roi_on_real_scans(trained: dict, shared_data: Path, tmp_path: Path) -> None:
    """Brain MR (DICOM, 512 x 512 x 120), TOF-MRA and CTA: a box inside each volume or a recorded fallback."""
    ctx = StageContext.for_folder(trained["ctx"].workspace.root, job_id="roi-real")
    images = ctx.workspace.converted("real", "test") / "images"
    images.mkdir(parents=True)
    niivue = shared_data / "niivue-demo-images"
    dicom2nifti.dicom_series_to_nifti(str(niivue / "dicom"), str(tmp_path / "mr.nii.gz"), reorient_nifti=False)
    sources = {"mr": tmp_path / "mr.nii.gz", "tof": niivue / "chris_MRA.nii.gz", "cta": niivue / "CT_AVM.nii.gz"}
    shapes = {}
    for uid, source in sources.items():
        img = _lps(nib.load(str(source)))
        nib.save(img, str(images / f"{uid}_0000.nii.gz"))
        shapes[uid] = img.shape[::-1]  # (z, y, x)
    assert shapes["mr"] == (120, 512, 512)

    model = trained["train"].artefacts["model"]  # the path the planner fills in from the train2d job
    roi.run(get_stage("roi").resolve("tiny", {"dataset": "real", "split": "test", "device": "cpu", "margin": 2,
                                              "model": model}), ctx)
    assert trained["train"].artefacts["model"] in ctx.reporter.of_type("log")[0]["message"]
    table = pd.read_csv(ctx.workspace.rois("real", "test") / "rois.csv", keep_default_na=False).set_index("SeriesInstanceUID")
    assert sorted(table.index) == sorted(sources)
    for uid, shape in shapes.items():
        row = table.loc[uid]
        ranges = [(row.z0, row.z1), (row.y0, row.y1), (row.x0, row.x1)]
        assert all(0 <= lo < hi <= n for (lo, hi), n in zip(ranges, shape))
        assert row.fallback in ("", "no_foreground") or row.fallback.startswith("full_range:")
        if row.fallback == "no_foreground":
            assert ranges == [(0, n) for n in shape]
        crop = nib.load(ctx.workspace.rois("real", "test") / "images" / f"{uid}_0000.nii.gz")
        assert crop.shape == (row.x1 - row.x0, row.y1 - row.y0, row.z1 - row.z0)
    assert ctx.reporter.metrics("coverage") == []  # no localizers for these scans


def test_roi_box_on_a_real_tof_mra_holds_its_vessels(shared_data: Path, tmp_path: Path) -> None:
    """The real TOF-MRA (niivue chris_MRA, background suppressed), whose vessels are its brightest voxels
    (flowing blood is what TOF makes bright): the box must hold them, not merely lie inside the volume.

    The stage-1 model is ``write_threshold_stage1_model``'s pointwise detector (deterministic; the tiny
    train2d of the demo boxes 80-95% of this scan depending on the run), so what is checked is the
    stage's own geometry on a real scan: nine slices, resampling, fusion and the box placed back in the
    volume's (z, y, x) voxels. An axis mix-up or a flip puts the box beside the vessels."""
    from engine.inference.synthetic import write_threshold_stage1_model

    ctx = StageContext.for_folder(tmp_path / "ws", job_id="roi-tof")
    images = ctx.workspace.converted("tof", "test") / "images"
    images.mkdir(parents=True)
    img = _lps(nib.load(str(shared_data / "niivue-demo-images" / "chris_MRA.nii.gz")))
    nib.save(img, str(images / "tof_0000.nii.gz"))
    volume = np.asarray(img.dataobj).transpose(2, 1, 0)  # (z, y, x)
    assert volume.shape == (120, 256, 200)
    model = write_threshold_stage1_model(tmp_path / "stage1", patch=(64, 64), spacing=(2.0, 2.0))
    roi.run(get_stage("roi").resolve("tiny", {"dataset": "tof", "split": "test", "device": "cpu", "model": str(model)}),
            ctx)
    row = pd.read_csv(ctx.workspace.rois("tof", "test") / "rois.csv", keep_default_na=False).iloc[0]
    assert row.fallback == "", row.to_dict()
    lo, hi = np.array([row.z0, row.y0, row.x0]), np.array([row.z1, row.y1, row.x1])
    vessels = np.argwhere(volume > np.percentile(volume, 99.9))

    def held(start: np.ndarray) -> float:
        return float(np.all((vessels >= start) & (vessels < start + hi - lo), axis=1).mean())

    box_fraction = np.prod(hi - lo) / volume.size
    assert box_fraction <= 0.25, f"the box {lo}..{hi} is {box_fraction:.0%} of the volume"
    assert held(lo) >= 0.55 and held(lo) >= 2.5 * box_fraction, \
        f"the box {lo}..{hi} ({box_fraction:.0%} of the volume) holds {held(lo):.0%} of the vessel voxels"
    flipped_y = np.array([lo[0], volume.shape[1] - hi[1], lo[2]])  # the same box mirrored front to back
    assert held(flipped_y) < 0.5 * held(lo), (held(flipped_y), held(lo))


def test_resume_continues_from_the_final_checkpoint(trained: dict) -> None:
    epochs = get_stage("train2d").defaults("tiny")["epochs"]
    ctx = StageContext.for_folder(trained["ctx"].workspace.root, job_id="train2d-resume")
    ctx.resume = True
    train.run(get_stage("train2d").resolve("tiny", {"validate": False, "device": "cpu", "epochs": epochs + 2}), ctx)
    assert [e["step"] for e in ctx.reporter.of_type("metric") if e["name"] == "train_loss"] == [epochs, epochs + 1]
    assert any("resuming from" in e["message"] and "checkpoint_final.pth" in e["message"]
               for e in ctx.reporter.of_type("log"))
    assert read_checkpoint(ctx.reporter.artefacts["checkpoint"])["current_epoch"] == epochs + 2
