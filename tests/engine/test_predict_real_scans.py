"""Stage ``predict`` on real scans of ../shared/data with the session's trained tiny models.

A brain MR (niivue-demo-images/dicom: 120 slices of 512 x 512) and a head CT (dcm_qa_ct Philips,
28 slices of 512 x 512), first as their DICOM folders, then as the NIfTI volumes ``convert`` makes of
them: every series ``ok``, a stage-1 box inside and smaller than its volume, and the same box and
probabilities from both inputs. The stage-1 model is ``stage1_trained``'s train2d, the ensemble
``stage2_trained``'s finetune1 and finetune2 (``tests/engine/conftest.py``), all named explicitly.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.context import StageContext
from engine.data.convert import SeriesTask, convert_one
from engine.inference import run
from engine.labels import LABEL_COLUMNS
from engine.stages import get_stage

SCANS = {"mr": "niivue-demo-images/dicom", "ct": "dcm_qa_ct/In/Philips/S21570/S2010"}


def _artefacts(found: list[dict]) -> dict[str, str]:
    return {e["name"]: e["path"] for e in found if e["type"] == "artefact"}


@pytest.fixture(scope="module")
def inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``dicom``: a folder of the two series folders; ``nifti``: a folder of their converted volumes."""
    root = tmp_path_factory.mktemp("real_predict")
    (root / "dicom").mkdir()
    (root / "nifti").mkdir()
    for name, relative in SCANS.items():
        folder = shared_data / relative
        (root / "dicom" / name).symlink_to(folder)
        files = tuple(str(p) for p in sorted(folder.iterdir()) if p.is_file())
        result = convert_one(SeriesTask(name, files, str(root / "converted"), (), False, None, 0))
        assert result["row"]["status"] in ("converted", "converted_fallback"), (name, result["row"])
        (root / "converted" / "images" / f"{name}_0000.nii.gz").rename(root / "nifti" / f"{name}_0000.nii.gz")
    return {"dicom": root / "dicom", "nifti": root / "nifti"}


def _predict(folder: Path, stage1: str, models: list[str], workspace: Path, job_id: str) -> tuple[pd.DataFrame, dict]:
    ctx = StageContext.for_folder(workspace, job_id=job_id)
    params = get_stage("predict").resolve("tiny", {"dataset": str(folder), "stage1_model": stage1,
                                                   "models": ",".join(models), "device": "cpu",
                                                   "save_segmentations": False})
    run(params, ctx)
    table = pd.read_csv(ctx.reporter.artefacts["predictions"], dtype={"SeriesInstanceUID": str},
                        keep_default_na=False).set_index("SeriesInstanceUID")
    cases = Path(ctx.reporter.artefacts["review"])
    return table, {uid: json.loads((cases / uid / "case.json").read_text()) for uid in table.index}


def test_predict_real_mr_and_ct_from_dicom_and_from_nifti(inputs: dict[str, Path], stage1_trained: dict,
                                                          stage2_trained: dict, tmp_path: Path) -> None:
    stage1 = stage1_trained["train"].artefacts["model"]
    models = [_artefacts(stage2_trained["jobs"][s])["model"] for s in ("finetune1", "finetune2")]
    from_dicom, dicom_cases = _predict(inputs["dicom"], stage1, models, tmp_path / "ws", "dicom")
    from_nifti, nifti_cases = _predict(inputs["nifti"], stage1, models, tmp_path / "ws", "nifti")
    assert sorted(from_dicom.index) == sorted(from_nifti.index) == sorted(SCANS)
    for uid in SCANS:
        case = dicom_cases[uid]
        assert case["status"] == "ok", case["reason"]
        shape, box = case["shape_zyx"], case["box"]
        ranges = [(box["z0"], box["z1"]), (box["y0"], box["y1"]), (box["x0"], box["x1"])]
        assert all(0 <= lo < hi <= n for (lo, hi), n in zip(ranges, shape)), (uid, ranges, shape)
        assert np.prod([hi - lo for lo, hi in ranges]) < np.prod(shape), f"{uid}: the box is the whole volume {box}"
        # the DICOM folder and its converted NIfTI are the same volume: same grid, box and probabilities
        other = nifti_cases[uid]
        assert other["status"] == "ok" and other["shape_zyx"] == shape and other["box"] == box
        np.testing.assert_allclose(other["affine_lps"], case["affine_lps"], atol=1e-4)
        np.testing.assert_allclose(from_nifti.loc[uid, list(LABEL_COLUMNS)].to_numpy(float),
                                   from_dicom.loc[uid, list(LABEL_COLUMNS)].to_numpy(float), rtol=0, atol=1e-6)
    assert dicom_cases["mr"]["shape_zyx"] == [120, 512, 512]
