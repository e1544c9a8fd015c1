"""The case table of a real tiny predict job: every series with the numbers of predictions.csv, the
default error order and the false-negative filter checked against pandas on the job's own files, and
the same through ``rsna-tui review`` (text and JSON) in a real subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from engine.labels import ANEURYSM_PRESENT, LABEL_COLUMNS
from rsna_tui.jobs.store import Store
from rsna_tui.review.cases import ReviewError, load_review
from rsna_tui.review.table import View, row_cells, select
from tests.app.review_job import ReviewJob

REPO = Path(__file__).resolve().parents[2]
KEY = "SeriesInstanceUID"


def expected(job: ReviewJob) -> pd.DataFrame:
    """predictions.csv joined with train.csv, with the error of Aneurysm Present, computed here."""
    predictions = pd.read_csv(job.predictions / "predictions.csv", dtype={KEY: str}).set_index(KEY)
    truth = pd.read_csv(job.dataset / "train.csv", dtype={KEY: str}).set_index(KEY)
    frame = predictions[list(LABEL_COLUMNS)].copy()
    frame["truth"] = truth.loc[frame.index, ANEURYSM_PRESENT].astype(int)
    frame["modality"] = truth.loc[frame.index, "Modality"]
    frame["abs_error"] = (frame[ANEURYSM_PRESENT] - frame["truth"]).abs()
    return frame


def rsna(job: ReviewJob, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "rsna_tui", "--workspace", str(job.workspace), "review", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_table_lists_every_series_with_the_numbers_of_predictions_csv(review_job: ReviewJob) -> None:
    frame = expected(review_job)
    with Store(review_job.db, readonly=True) as store:
        review = load_review(store)  # the latest predict job
    assert review.job.id == review_job.job_id
    assert sorted(c.uid for c in review.cases) == sorted(frame.index) and len(frame) == 10
    for case in review.cases:
        assert case.probabilities == pytest.approx(frame.loc[case.uid, list(LABEL_COLUMNS)].to_list(), abs=1e-12)
        assert case.true_present == frame.loc[case.uid, "truth"]
        assert case.modality == frame.loc[case.uid, "modality"]
        assert case.folder == review_job.predictions / "cases" / case.uid
        assert case.seconds is not None and case.seconds > 0 and not case.failed
    multiframe = [c for c in review.cases if c.fallback]
    assert [c.fallback for c in multiframe] == ["multiframe"]  # the demo's Enhanced series
    # the AUCs the job computed head the screen
    assert review.aucs[ANEURYSM_PRESENT] == pytest.approx(
        json.loads((review_job.predictions / "metrics.json").read_text())["auc"][ANEURYSM_PRESENT])


def test_default_order_is_by_error_and_the_false_negative_filter(review_job: ReviewJob) -> None:
    frame = expected(review_job)
    with Store(review_job.db, readonly=True) as store:
        review = load_review(store, review_job.job_id)
    by_error = frame.sort_values("abs_error", ascending=False, kind="stable")
    assert [c.uid for c in select(review.cases)] == list(by_error.index)
    negatives = frame[(frame["truth"] == 1) & (frame[ANEURYSM_PRESENT] < 0.5)]
    assert len(negatives) > 0  # untrained models: every positive sits near 0.44
    assert {c.uid for c in select(review.cases, View("fn"))} == set(negatives.index)
    positives = frame[(frame["truth"] == 0) & (frame[ANEURYSM_PRESENT] >= 0.5)]
    assert {c.uid for c in select(review.cases, View("fp"))} == set(positives.index)
    assert {c.uid for c in select(review.cases, View("fn", threshold=0.0))} == set()
    cta = select(review.cases, View(modality="CTA", sort="probability"))
    assert [c.uid for c in cta] == list(frame[frame["modality"] == "CTA"].sort_values(
        ANEURYSM_PRESENT, ascending=False).index)
    assert [c.uid for c in select(review.cases, View("fallback"))] == [c.uid for c in review.cases if c.fallback]
    cells = row_cells(review.case(by_error.index[0]))
    assert cells[3] == f"{by_error[ANEURYSM_PRESENT].iloc[0]:.3f}" and cells[4] == f"{by_error['abs_error'].iloc[0]:.3f}"


def test_cli_table_as_text_and_json(review_job: ReviewJob) -> None:
    frame = expected(review_job)
    result = rsna(review_job, str(review_job.job_id), "--filter", "fn", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    negatives = frame[(frame["truth"] == 1) & (frame[ANEURYSM_PRESENT] < 0.5)].sort_values("abs_error", ascending=False)
    assert [c[KEY] for c in data["cases"]] == list(negatives.index)
    assert data["cases"][0]["probabilities"][ANEURYSM_PRESENT] == pytest.approx(negatives[ANEURYSM_PRESENT].iloc[0])
    text = rsna(review_job)  # piped: TSV on stdout, the heading on stderr
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["series", "modality", "truth", "p(present)"] and len(lines) == 11
    assert f"predict job {review_job.job_id}" in text.stderr and "AUC" in text.stderr


def test_clear_errors_for_a_wrong_job_or_case(review_job: ReviewJob) -> None:
    with Store(review_job.db, readonly=True) as store:
        with pytest.raises(ReviewError, match="no job 99"):
            load_review(store, 99)
        review = load_review(store)
    with pytest.raises(ReviewError, match="no case"):
        review.case("not-a-series")
    ends = [c.uid[-1] for c in review.cases]
    shared = next(end for end in ends if ends.count(end) > 1)  # the last digit of several UIDs
    result = rsna(review_job, "--case", shared)
    assert result.returncode == 1 and f"cases of job 1 match '{shared}'" in result.stderr
    result = rsna(review_job, "--png", "x.png")
    assert result.returncode == 1 and "--png needs --case" in result.stderr


def test_fallback_and_failed_filters_on_hand_made_cases() -> None:
    from rsna_tui.review.cases import Case

    half = [0.5] * len(LABEL_COLUMNS)
    cases = [
        Case("ok", half, [0] * 14, seconds=2.0),
        Case("converted-with-fallback", half, [0] * 14, fallback="resampled"),
        Case("box-fallback", half, None, box_fallback="full_volume"),
        Case("failed", half, [1] * 14, status="failed", error="failed: cannot read the series"),
    ]
    assert [c.uid for c in select(cases, View("fallback"))] == ["converted-with-fallback", "box-fallback"]
    assert [c.uid for c in select(cases, View("failed"))] == ["failed"]
    assert select(cases, View("fn")) == []  # 0.5 counts as positive: two false positives
    assert [c.uid for c in select(cases, View("fp"))] == ["converted-with-fallback", "ok"]
    assert [c.uid for c in select(cases, View("fn", threshold=0.6))] == ["failed"]
    assert row_cells(cases[3])[7].endswith("failed: cannot read the series")
    assert [c.uid for c in select(cases)][-1] == "box-fallback"  # no truth: last in the error order
    assert [c.uid for c in select(cases, View(sort="seconds"))][0] == "ok"
