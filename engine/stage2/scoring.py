"""Scoring the classification heads on a validation set that may be tiny.

The competition metric (``engine.metrics``) refuses a column that holds one class only, rightly for
a submission. During training a small validation fold (or the few cases drawn in one epoch) often
has such columns, so here they are skipped and named instead, and the competition score is given
only when all 14 columns are scorable.
"""
from __future__ import annotations

import pandas as pd
from sklearn.metrics import roc_auc_score

from engine.labels import LABEL_COLUMNS
from engine.metrics import KEY, evaluate


def score_predictions(predictions: pd.DataFrame, truth: pd.DataFrame) -> tuple[dict[str, float], list[str], float | None]:
    """AUC of every label column that holds both classes in ``truth``, the columns skipped, and the
    competition score when none was skipped. Both frames are indexed by case and hold the 14 label
    columns; ``predictions`` may hold more cases than ``truth``."""
    aucs: dict[str, float] = {}
    skipped: list[str] = []
    for column in LABEL_COLUMNS:
        labels = truth[column].to_numpy() > 0.5
        if labels.all() or not labels.any():
            skipped.append(column)
            continue
        aucs[column] = float(roc_auc_score(labels, predictions.loc[truth.index, column].to_numpy()))
    score = None
    if not skipped:
        def frame(f: pd.DataFrame) -> pd.DataFrame:
            return f.loc[truth.index, list(LABEL_COLUMNS)].rename_axis(KEY).reset_index()

        score = float(evaluate(frame(predictions), frame(truth))["score"])
    return aucs, skipped, score
