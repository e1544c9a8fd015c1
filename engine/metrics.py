"""The competition metric and the ``evaluate`` stage.

Score = weighted mean of the 14 column-wise ROC AUCs, weight 13 for ``Aneurysm Present`` and 1
for each location (COMPETITION.md), i.e. 0.5 * AUC(present) + 0.5 * mean(location AUCs). The
official code crashes when a column holds a single class; here that is a clear error naming the
column, because a silently skipped column would change the score.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from engine.context import StageContext
from engine.labels import COLUMN_WEIGHTS, LABEL_COLUMNS

KEY = "SeriesInstanceUID"


class EvaluationError(ValueError):
    """Predictions and truth that cannot be scored; the message names the column or series."""


def evaluate(predictions: pd.DataFrame, truth: pd.DataFrame, skip_single_class: bool = False) -> dict[str, Any]:
    """Score and per-column AUCs (as written to ``metrics.json``), rows matched by ``SeriesInstanceUID``.

    A column holding one class only in ``truth`` has no AUC: by default that is an error naming
    the column, as for a submission. With ``skip_single_class`` (small validation folds, a demo's
    held-out split) such columns are listed in ``single_class_columns`` instead, the others are
    scored, and ``score`` is None unless all 14 columns were scorable.
    """
    _check_columns(predictions, "predictions")
    _check_columns(truth, "truth")
    pred = predictions.set_index(KEY)
    true = truth.set_index(KEY)
    missing = true.index.difference(pred.index)
    if len(missing):
        raise EvaluationError(f"{len(missing)} series of the truth have no prediction, e.g. {', '.join(missing[:3])}")
    pred = pred.loc[true.index]
    aucs: dict[str, float] = {}
    single: list[str] = []
    for column in LABEL_COLUMNS:
        labels = true[column].to_numpy()
        classes = np.unique(labels)
        if len(classes) < 2:
            if skip_single_class:
                single.append(column)
                continue
            only = "positives" if classes.size and classes[0] == 1 else "negatives"
            raise EvaluationError(f"column '{column}' has only {only} in the truth; its AUC is undefined")
        scores = pred[column].to_numpy(dtype=float)
        if not np.isfinite(scores).all():
            raise EvaluationError(f"column '{column}' of the predictions holds NaN or infinite values")
        aucs[column] = float(roc_auc_score(labels, scores))
    score = None if single else competition_score(aucs)
    return {"score": score, "auc": aucs, "n_series": int(len(true)), "single_class_columns": single}


def competition_score(aucs: dict[str, float]) -> float:
    """Weighted mean of the column AUCs with the official weights."""
    total = sum(COLUMN_WEIGHTS.values())
    return float(sum(COLUMN_WEIGHTS[c] * aucs[c] for c in LABEL_COLUMNS) / total)


def _check_columns(frame: pd.DataFrame, what: str) -> None:
    missing = [c for c in (KEY, *LABEL_COLUMNS) if c not in frame.columns]
    if missing:
        raise EvaluationError(f"{what} lacks the column(s): {', '.join(missing)}")
    duplicated = frame[KEY][frame[KEY].duplicated()]
    if len(duplicated):
        raise EvaluationError(f"{what} lists series {duplicated.iloc[0]} more than once")


def _read_csv(path: str, what: str) -> pd.DataFrame:
    if not path:
        raise EvaluationError(f"no {what} file given (--set {what}=PATH)")
    try:
        return pd.read_csv(path, dtype={KEY: str})
    except FileNotFoundError:
        raise EvaluationError(f"{what} file not found: {path}") from None


def run(params: dict[str, Any], ctx: StageContext) -> None:
    """Stage ``evaluate``: score a predictions CSV against a truth CSV."""
    result = evaluate(_read_csv(params["predictions"], "predictions"), _read_csv(params["truth"], "truth"))
    out = ctx.job_dir / "metrics.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    ctx.reporter.metric("score", result["score"])
    for column, auc in result["auc"].items():
        ctx.reporter.metric(f"auc/{column}", auc)
    ctx.reporter.artefact("metrics", out)
    ctx.reporter.log(f"score {result['score']:.4f} on {result['n_series']} series")
