"""The competition metric against scikit-learn with the official weights, and its error messages."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from engine.context import StageContext
from engine.labels import ANEURYSM_PRESENT, LABEL_COLUMNS, LOCATIONS
from engine.metrics import EvaluationError, evaluate, run


def _frames(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    uids = [f"1.2.3.{i}" for i in range(n)]
    truth = pd.DataFrame({"SeriesInstanceUID": uids})
    pred = pd.DataFrame({"SeriesInstanceUID": uids[::-1]})  # other row order on purpose
    for c in LABEL_COLUMNS:
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        truth[c] = labels
        pred[c] = (labels * 0.3 + rng.random(n))[::-1]
    return pred, truth


def test_score_matches_sklearn_with_official_weights() -> None:
    pred, truth = _frames()
    result = evaluate(pred, truth)
    aligned = pred.set_index("SeriesInstanceUID").loc[truth["SeriesInstanceUID"]]
    aucs = {c: roc_auc_score(truth[c], aligned[c]) for c in LABEL_COLUMNS}
    weights = np.array([1.0] * 13 + [13.0])
    expected = float(np.dot(weights, [aucs[c] for c in LABEL_COLUMNS]) / weights.sum())
    assert result["score"] == pytest.approx(expected, abs=1e-12)
    assert result["score"] == pytest.approx(0.5 * aucs[ANEURYSM_PRESENT] + 0.5 * np.mean([aucs[c] for c in LOCATIONS]))
    assert result["auc"] == pytest.approx(aucs)


def test_single_class_column_is_named() -> None:
    pred, truth = _frames()
    truth["Basilar Tip"] = 0
    with pytest.raises(EvaluationError, match="'Basilar Tip' has only negatives"):
        evaluate(pred, truth)


def test_missing_series_and_columns_are_named() -> None:
    pred, truth = _frames()
    with pytest.raises(EvaluationError, match="1.2.3.0"):
        evaluate(pred[pred["SeriesInstanceUID"] != "1.2.3.0"], truth)
    with pytest.raises(EvaluationError, match="Anterior Communicating Artery"):
        evaluate(pred.drop(columns=["Anterior Communicating Artery"]), truth)


def test_stage_writes_metrics_json_and_events(tmp_path) -> None:
    pred, truth = _frames()
    pred.to_csv(tmp_path / "pred.csv", index=False)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    ctx = StageContext.for_folder(tmp_path / "ws")
    run({"predictions": str(tmp_path / "pred.csv"), "truth": str(tmp_path / "truth.csv")}, ctx)
    written = json.loads((ctx.job_dir / "metrics.json").read_text())
    expected = evaluate(pred, truth)
    assert written["score"] == pytest.approx(expected["score"])
    assert written["auc"] == pytest.approx(expected["auc"])
    assert ctx.reporter.metrics("score") == [pytest.approx(written["score"])]
    assert ctx.reporter.artefacts["metrics"] == str(ctx.job_dir / "metrics.json")


def test_skip_single_class_scores_the_rest_and_withholds_the_score() -> None:
    pred, truth = _frames()
    full = evaluate(pred, truth, skip_single_class=True)
    assert full["single_class_columns"] == [] and full["score"] == pytest.approx(evaluate(pred, truth)["score"])
    truth["Basilar Tip"] = 0
    partial = evaluate(pred, truth, skip_single_class=True)
    assert partial["single_class_columns"] == ["Basilar Tip"] and partial["score"] is None
    assert set(partial["auc"]) == set(LABEL_COLUMNS) - {"Basilar Tip"}
    assert partial["auc"]["Aneurysm Present"] == pytest.approx(full["auc"]["Aneurysm Present"])
