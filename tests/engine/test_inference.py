"""Inference (issue 7): mirror property through the whole path, the gateway contract, DICOM vs NIfTI.

Models: ``engine.inference.synthetic`` folders in the real contracts. Stage 2 is a random tiny network
(two seeds = the two-model ensemble). Stage 1 is an nnU-Net 2D results folder whose hand-set weights
make it a pointwise intensity detector: nnU-Net's predictor runs it like a trained model, and its box
of a mirrored volume is exactly the mirrored box, so the mirror test covers the box step too. (A
trained stage-1 model is not exactly mirror-equivariant: its kernels are not symmetric and the fusion
truncates mean box bounds with ``int``, so a mirrored volume can get a box one voxel off.)
"""
from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from engine.data.convert import SeriesTask, convert_one
from engine.inference import Predictor, configure, last_prediction, predict
from engine.inference.gateway import reset
from engine.inference.synthetic import write_stage2_model, write_threshold_stage1_model
from engine.labels import LABEL_COLUMNS, LR_SWAP
from engine.stage2.targets import DECODER1_LR_SWAP, DECODER2_LR_SWAP

SPACING = 4.0
LPS = np.diag([-SPACING, -SPACING, SPACING, 1.0])


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("inference_models")
    stage1 = write_threshold_stage1_model(root / "stage1", patch=(32, 32), spacing=(SPACING, SPACING))
    stage2 = [write_stage2_model(root / f"stage2_{seed}", [4, 8, 16, 32], [1, 1, 1, 1], 32, seed=seed, fold=seed - 1)
              for seed in (1, 2)]
    return stage1, stage2


@pytest.fixture(scope="module")
def predictor(model_folders: tuple[Path, list[Path]]) -> Predictor:
    stage1, stage2 = model_folders
    return Predictor(stage1, stage2, tta=8, device="cpu")


def block_volume(seed: int = 0) -> np.ndarray:
    """(z, y, x) volume: dark background, a bright textured block placed off-centre along x."""
    rng = np.random.default_rng(seed)
    volume = np.zeros((20, 24, 29), np.float32)
    volume[4:16, 5:19, 3:17] = 100 + 40 * rng.random((12, 14, 14))
    return volume


def save_zyx(volume: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), LPS), str(path))
    return path


def test_mirror_property_through_the_whole_path(predictor: Predictor, tmp_path: Path) -> None:
    volume = block_volume()
    original = predictor.predict_series(save_zyx(volume, tmp_path / "a.nii.gz"), segmentations=True)
    mirrored = predictor.predict_series(save_zyx(volume[:, :, ::-1], tmp_path / "b.nii.gz"), segmentations=True)
    assert original.status == mirrored.status == "ok", (original.reason, mirrored.reason)

    # stage 1 finds the block, and the mirrored block in the mirrored volume (x = array axis 2)
    box, box_m = original.boxes[0], mirrored.boxes[0]
    assert (box.z, box.y, box.x) == ((4, 16), (5, 19), (3, 17))
    assert (box_m.z, box_m.y, box_m.x) == (box.z, box.y, (29 - box.x[1], 29 - box.x[0]))

    p, q = original.probabilities, mirrored.probabilities
    # the property is not trivially true: this random network tells left from right
    assert np.abs(p[:13] - p[:13][list(LR_SWAP)]).max() > 1e-3
    np.testing.assert_allclose(q[:13], p[:13][list(LR_SWAP)], atol=1e-5)
    np.testing.assert_allclose(q[13], p[13], atol=1e-5)

    # the decoders' maps mirror too, vessel labels swapped (arg-max ties may differ by float noise)
    for name, swap in (("seg1", DECODER1_LR_SWAP), ("seg2", DECODER2_LR_SWAP)):
        a = getattr(original.segmentations, name)
        b = getattr(mirrored.segmentations, name)[:, :, ::-1]
        assert (np.asarray(swap)[a] == b).mean() > 0.99


def test_four_views_keep_the_mirror_property_and_one_view_does_not_need_to(
        model_folders: tuple[Path, list[Path]], tmp_path: Path) -> None:
    stage1, stage2 = model_folders
    a, b = save_zyx(block_volume(1), tmp_path / "a.nii.gz"), save_zyx(block_volume(1)[:, :, ::-1], tmp_path / "b.nii.gz")
    four = Predictor(stage1, stage2[:1], tta=4, device="cpu")
    p, q = four.predict_series(a).probabilities, four.predict_series(b).probabilities
    np.testing.assert_allclose(q[:13], p[:13][list(LR_SWAP)], atol=1e-5)
    one = Predictor(stage1, stage2[:1], tta=1, device="cpu")
    p1, q1 = one.predict_series(a).probabilities, one.predict_series(b).probabilities
    assert np.abs(q1[:13] - p1[:13][list(LR_SWAP)]).max() > 1e-4  # one view: no symmetry by construction


def test_gateway_contract_columns_empty_and_corrupt(model_folders: tuple[Path, list[Path]], predictor: Predictor,
                                                    demo_cohort: Path, tmp_path: Path) -> None:
    stage1, stage2 = model_folders
    reset()
    configure(stage1_model=stage1, models=stage2, tta=8, device="cpu")
    series = sorted((demo_cohort / "test" / "series").iterdir())[0]
    row = predict(str(series))
    assert isinstance(row, pd.DataFrame)
    assert list(row.columns) == list(LABEL_COLUMNS) and len(row) == 1
    # the gateway's row is the predictor's result for the series, with the same models and views
    expected = predictor.predict_series(series)
    np.testing.assert_allclose(row.to_numpy()[0], expected.probabilities, rtol=0, atol=1e-6)
    assert not np.allclose(row.to_numpy(), 0.5)
    assert last_prediction().status == "ok" and last_prediction().boxes == expected.boxes

    empty = tmp_path / "empty"
    empty.mkdir()
    row = predict(str(empty))
    assert list(row.columns) == list(LABEL_COLUMNS)
    assert (row.to_numpy() == 0.5).all()
    assert last_prediction().status == "empty"

    broken = tmp_path / "broken"
    broken.mkdir()
    for source in sorted(series.iterdir())[:2]:  # two slices of a volume: not convertible
        shutil.copy(source, broken / source.name)
    row = predict(str(broken))
    assert (row.to_numpy() == 0.5).all()
    assert last_prediction().status == "failed" and "slices" in last_prediction().reason
    reset()


def test_dicom_and_its_converted_nifti_give_the_same_prediction(predictor: Predictor, demo_cohort: Path,
                                                                 tmp_path: Path) -> None:
    table = pd.read_csv(demo_cohort / "demo_series.csv", dtype={"SeriesInstanceUID": str})
    train = table[table["split"] == "train"]
    picks = [train[train["orientation"] == "sagittal"].iloc[0], train[train["multiframe"] == 1].iloc[0]]
    for pick in picks:
        uid = pick["SeriesInstanceUID"]
        folder = demo_cohort / "series" / uid
        files = tuple(str(p) for p in sorted(folder.iterdir()))
        result = convert_one(SeriesTask(uid, files, str(tmp_path / "converted"), (), False, None, 0))
        assert result["row"]["status"] in ("converted", "converted_fallback"), result["row"]["reason"]
        nifti = tmp_path / "converted" / "images" / f"{uid}_0000.nii.gz"
        from_dicom = predictor.predict_series(folder)
        from_nifti = predictor.predict_series(nifti)
        assert from_dicom.uid == from_nifti.uid == uid
        assert from_dicom.status == from_nifti.status == "ok"
        assert from_dicom.boxes == from_nifti.boxes
        assert from_dicom.shape == from_nifti.shape
        np.testing.assert_allclose(from_dicom.probabilities, from_nifti.probabilities, atol=1e-6)


def test_device_preparation_matches_the_training_preparation() -> None:
    import torch

    from engine.inference.predictor import prepare_tensor
    from engine.stage2.dataset import prepare_image

    crop = block_volume(2)[2:18, 3:21, 1:20] * 3.0 - 50.0
    np.testing.assert_allclose(prepare_tensor(torch.from_numpy(crop), 32)[0, 0].numpy(), prepare_image(crop, 32),
                               rtol=0, atol=1e-6)


def test_several_time_points_give_the_elementwise_max(predictor: Predictor, tmp_path: Path) -> None:
    first, second = block_volume(3), block_volume(4)[:, ::-1, :] * 0.5 + 7.0
    both = np.stack([v.transpose(2, 1, 0) for v in (first, second)], axis=-1)  # NIfTI (x, y, z, t)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(both), LPS), str(tmp_path / "4d.nii.gz"))
    result = predictor.predict_series(tmp_path / "4d.nii.gz")
    singles = [predictor.predict_series(save_zyx(v, tmp_path / f"t{i}.nii.gz")).probabilities
               for i, v in enumerate((first, second))]
    assert result.status == "ok" and result.timepoints == 2 and len(result.boxes) == 2
    assert result.fallback == "timepoints:2"
    assert not np.allclose(singles[0], singles[1])
    np.testing.assert_allclose(result.probabilities, np.maximum(*singles), atol=1e-6)
