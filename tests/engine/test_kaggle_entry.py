"""``engine.inference.kaggle`` (issue 15): ``predict`` behind a gateway loop that calls it as the
competition's does, and the in-process local gateway used when ``kaggle_evaluation`` is absent.

The competition's ``kaggle_evaluation`` package ships only with the competition's data, so the gateway
here is a stand-in package written into a temporary folder: ``RSNAInferenceServer(predict)`` whose
``run_local_gateway(data_paths, file_share_dir)`` does what the competition's ``RSNAGateway`` does (the
series of test.csv in random order, each series' top-level ``*.dcm`` files shared under
``<share>/<absolute series path>``, one ``predict(folder)`` call each, the answer checked: a polars or
pandas frame with one row). Models are ``engine.inference.synthetic`` folders; the series are the demo
cohort's held-out DICOM series.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from engine.inference import Predictor, gateway, kaggle
from engine.inference.synthetic import write_stage2_model, write_threshold_stage1_model
from engine.labels import LABEL_COLUMNS

KEY = "SeriesInstanceUID"

STAND_IN = '''
"""Stand-in for the competition's kaggle_evaluation.rsna_inference_server (see the test module)."""
import os
import random
import shutil
from pathlib import Path

import pandas as pd

CALLS = []
SERVED = []


class RSNAInferenceServer:
    def __init__(self, predict):
        self.predict = predict

    def serve(self):
        SERVED.append(os.environ.get("KAGGLE_IS_COMPETITION_RERUN"))

    def run_local_gateway(self, data_paths=None, file_share_dir=None):
        test_csv, series_dir = data_paths
        share = Path(file_share_dir or "/kaggle/shared")
        uids = list(pd.read_csv(test_csv, dtype=str)["SeriesInstanceUID"].unique())
        for uid in random.sample(uids, len(uids)):
            source = Path(series_dir) / uid
            shared = share / source.relative_to(source.anchor)
            shared.mkdir(parents=True, exist_ok=True)
            for path in source.glob("*.dcm"):
                shutil.copy(path, shared / path.name)
            answer = self.predict(str(shared))
            CALLS.append({"uid": uid, "folder": str(shared), "answer": answer,
                          "left_in_share": sorted(str(p) for p in share.rglob("*"))})
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("kaggle_models")
    stage1 = write_threshold_stage1_model(root / "stage1", patch=(32, 32), spacing=(4.0, 4.0))
    stage2 = [write_stage2_model(root / f"stage2_{seed}", [4, 8, 16, 32], [1, 1, 1, 1], 32, seed=seed, fold=seed - 1)
              for seed in (1, 2)]
    return stage1, stage2


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stand-in ``kaggle_evaluation`` package, importable for this test only."""
    package = tmp_path / "stand_in" / "kaggle_evaluation"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "rsna_inference_server.py").write_text(textwrap.dedent(STAND_IN))
    monkeypatch.syspath_prepend(str(package.parent))
    for name in ("kaggle_evaluation", "kaggle_evaluation.rsna_inference_server"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delenv(kaggle.RERUN_ENV, raising=False)
    import kaggle_evaluation.rsna_inference_server as server

    yield server
    gateway.reset()
    for name in ("kaggle_evaluation.rsna_inference_server", "kaggle_evaluation"):
        sys.modules.pop(name, None)


def test_predict_behind_the_competitions_gateway_loop(models: tuple[Path, list[Path]], demo_cohort: Path,
                                                      stand_in, tmp_path: Path) -> None:
    stage1, stage2 = models
    series_dir = demo_cohort / "test" / "series"
    share = tmp_path / "kaggle" / "shared"
    assert kaggle.serve(stage1, stage2, tta=1, device="cpu", shared_dir=share,
                        data_paths=(str(demo_cohort / "test_truth.csv"), str(series_dir))) is None

    truth = pd.read_csv(demo_cohort / "test_truth.csv", dtype={KEY: str})
    calls = stand_in.CALLS
    assert sorted(c["uid"] for c in calls) == sorted(truth[KEY])  # one call per series
    reference = Predictor(stage1, stage2, tta=1, device="cpu")
    for call in calls:
        assert Path(call["folder"]).name == call["uid"] and str(share) in call["folder"]
        assert call["left_in_share"] == []  # predict cleared the shared folder after reading the series
        answer = call["answer"]
        assert isinstance(answer, pl.DataFrame) and answer.shape == (1, 14)  # polars, as the demo returns
        assert answer.columns == list(LABEL_COLUMNS)
        expected = reference.predict_series(series_dir / call["uid"]).probabilities
        np.testing.assert_allclose(answer.row(0), expected, atol=1e-6)  # read from the share as from the source
        assert not np.allclose(expected, 0.5)
    assert (series_dir / calls[0]["uid"]).is_dir() and share.is_dir()
    assert stand_in.SERVED == []


def test_serve_waits_for_the_competitions_rerun(models: tuple[Path, list[Path]], stand_in,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kaggle.RERUN_ENV, "1")
    stage1, stage2 = models
    assert kaggle.serve(stage1, stage2, tta=1, device="cpu") is None
    assert stand_in.SERVED == ["1"] and stand_in.CALLS == []


def test_local_gateway_without_kaggle_evaluation(models: tuple[Path, list[Path]], demo_cohort: Path,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("kaggle_evaluation", "kaggle_evaluation.rsna_inference_server"):
        monkeypatch.setitem(sys.modules, name, None)  # the import fails, as outside Kaggle
    stage1, stage2 = models
    series_dir = demo_cohort / "test" / "series"
    share, out = tmp_path / "shared", tmp_path / "out" / "submission.parquet"
    try:
        submission = kaggle.serve(stage1, stage2, tta=1, device="cpu", shared_dir=share, series_dir=series_dir,
                                  out=out, frame="pandas", seed=3)
    finally:
        gateway.reset()
    written = pl.read_parquet(out)
    assert written.columns == [KEY, *LABEL_COLUMNS] and written.height == len(list(series_dir.iterdir()))
    assert sorted(written[KEY].to_list()) == sorted(p.name for p in series_dir.iterdir())
    assert submission is not None and list(submission.columns) == [KEY, *LABEL_COLUMNS]
    assert share.is_dir() and not any(share.iterdir())


def test_predict_leaves_folders_outside_the_share_alone(models: tuple[Path, list[Path]], demo_cohort: Path,
                                                         tmp_path: Path) -> None:
    stage1, stage2 = models
    gateway.configure(stage1_model=stage1, models=stage2, tta=1, device="cpu")
    series = sorted((demo_cohort / "test" / "series").iterdir())[0]
    try:
        answer = kaggle.predict(series)
    finally:
        gateway.reset()
    assert answer.shape == (1, 14) and series.is_dir() and any(series.iterdir())
    assert kaggle.clear_shared(series, tmp_path) is False


def test_gateway_checks_the_answer() -> None:
    row = pd.DataFrame([dict.fromkeys(LABEL_COLUMNS, 0.5)])
    assert kaggle.check_row(kaggle.as_frame(row, "polars"), "1.2") == dict.fromkeys(LABEL_COLUMNS, 0.5)
    assert kaggle.check_row(row, "1.2")["Aneurysm Present"] == 0.5
    with pytest.raises(kaggle.GatewayError, match="series 1.2: predict returned 2 rows"):
        kaggle.check_row(pd.concat([row, row]), "1.2")
    with pytest.raises(kaggle.GatewayError, match="columns"):
        kaggle.check_row(row[list(LABEL_COLUMNS[::-1])], "1.2")
    with pytest.raises(kaggle.GatewayError, match="not a polars or pandas frame"):
        kaggle.check_row({"Aneurysm Present": 0.5}, "1.2")
