"""Stage ``predict``: two-stage inference over a dataset split or a folder of series, then the score.

Inputs: ``dataset`` + ``split`` of a Kaggle-layout folder (``series/`` or ``test/series/``), or any folder
whose sub-folders are DICOM series and/or whose ``.nii``/``.nii.gz`` files are volumes (``split`` is then
not used; NIfTI names lose ``.nii.gz`` and nnU-Net's ``_0000``). Models: ``models`` = stage-2 results
folders, comma separated (the planner fills in the ``finetune1`` and ``finetune2`` jobs' models: the
original's two-model ensemble; one model alone is used as given); ``stage1_model`` = the stage-1
results folder (the planner fills in the ``train2d`` job's).

Outputs under ``ctx.workspace.predictions / <job id>``:
``predictions.csv`` (exactly the submission format: SeriesInstanceUID and the 14 label columns; artefact
``predictions``, imported into the job store), ``cases/<uid>/`` review files (``engine.inference.review``;
the folder is artefact ``review``), ``cases.csv`` (artefact ``cases``, one line per case: status,
seconds, conversion fallback, slice gap note, time points, box, reason; the store takes each case's
seconds and error from it) and, when the split has
truth (``test_truth.csv`` / ``train.csv``), ``metrics.json`` with the competition score and the column
AUCs (metrics ``score`` and ``auc/<column>``; artefact ``truth`` = the truth CSV). A small split where a
column holds one class only cannot be scored: that is logged, the defined AUCs are still reported and the
job succeeds.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.context import StageContext, input_path
from engine.data.kaggle import KaggleDataset, KaggleSchemaError
from engine.data.slice_gaps import DEFAULT_FACTOR
from engine.inference.predictor import EMPTY, FAILED, Predictor, SeriesPrediction
from engine.inference.review import box_record, write_case
from engine.inference.review_extras import split_localizers, write_review_extras
from engine.inference.series import is_nifti, series_id
from engine.labels import LABEL_COLUMNS
from engine.metrics import KEY, evaluate
from engine.nnunet_runtime import configure_environment

PREDICTIONS_FILE = "predictions.csv"
CASES_FILE = "cases.csv"
PREDICTION_COLUMNS = [KEY, *LABEL_COLUMNS]
CASE_COLUMNS = [KEY, "status", "seconds", "fallback", "slice_gap", "timepoints", "z0", "z1", "y0", "y1", "x0", "x1",
                "box_fallback", "reason"]


def stage2_models(ref: str) -> list[Path]:
    """The stage-2 results folders of ``models`` (comma separated paths)."""
    parts = [part.strip() for part in ref.split(",") if part.strip()]
    if not parts:
        raise FileNotFoundError("models is empty; give stage-2 results folders (comma separated) or plan "
                                "finetune1 / finetune2 with `rsna-tui run --stage predict`")
    return [input_path("models", part, "a stage-2 results folder") for part in parts]


def list_inputs(ctx: StageContext, dataset: str, split: str) -> tuple[list[tuple[str, Path]], Path | None]:
    """(uid, series folder or NIfTI file) of every case, and the truth CSV when there is one."""
    root = ctx.workspace.dataset(dataset)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {dataset!r}: {root} is not a folder")
    try:
        data = KaggleDataset.open(root, split)
    except KaggleSchemaError:
        if (root / "series").is_dir() or (root / "test" / "series").is_dir():
            raise  # a Kaggle layout without this split: say so rather than treat its folders as series
        data = None
    if data is not None:
        return [(uid, data.series_dir / uid) for uid in data.series_uids()], data.table_path
    entries = sorted(p for p in root.iterdir() if not p.name.startswith(".") and (p.is_dir() or is_nifti(p)))
    ctx.reporter.log(f"{root} is not a Kaggle layout: predicting its {len(entries)} series folders / NIfTI files")
    return [(series_id(p), p) for p in entries], None


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    frame.to_csv(partial, index=False)
    os.replace(partial, path)


def case_line(prediction: SeriesPrediction) -> dict[str, Any]:
    line: dict[str, Any] = {KEY: prediction.uid, "status": prediction.status, "seconds": round(prediction.seconds, 4),
                            "fallback": prediction.fallback, "slice_gap": prediction.slice_gap,
                            "timepoints": prediction.timepoints, "reason": prediction.reason}
    if prediction.boxes:
        record = box_record(prediction.boxes[prediction.review_timepoint], prediction.spacing)
        line.update({k: record[k] for k in ("z0", "z1", "y0", "y1", "x0", "x1")}, box_fallback=record["fallback"])
    return line


def score(predictions: pd.DataFrame, truth_path: Path, out: Path, ctx: StageContext) -> None:
    """Competition score of the predicted series that the truth lists; single-class columns are logged."""
    truth = pd.read_csv(truth_path, dtype={KEY: str})
    unknown = sorted(set(predictions[KEY]) - set(truth[KEY]))
    if unknown:
        ctx.reporter.log(f"{len(unknown)} predicted series are not in {truth_path.name} (e.g. {unknown[0]}); not scored")
    truth = truth[truth[KEY].isin(predictions[KEY])]
    scored = predictions[predictions[KEY].isin(truth[KEY])]
    if truth.empty:
        ctx.reporter.log(f"no predicted series is in {truth_path.name}: nothing to score")
        return
    result = evaluate(scored, truth, skip_single_class=True)
    if result["score"] is not None:
        ctx.reporter.metric("score", result["score"])
        ctx.reporter.log(f"score {result['score']:.4f} on {result['n_series']} series")
    else:
        single = result["single_class_columns"]
        ctx.reporter.log(f"no score: {len(single)} column(s) have a single class among these {len(truth)} series "
                         f"(AUC undefined): {', '.join(single)}; the other columns' AUCs are reported")
    for column, auc in result["auc"].items():
        ctx.reporter.metric(f"auc/{column}", auc)
    path = out / "metrics.json"
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(result, indent=2))
    os.replace(partial, path)
    ctx.reporter.artefact("metrics", path)


def run(params: dict[str, Any], ctx: StageContext) -> None:
    configure_environment(ctx.workspace)
    inputs, truth_path = list_inputs(ctx, params["dataset"], params["split"])
    if not inputs:
        raise FileNotFoundError(f"no series to predict in dataset {params['dataset']!r} ({params['split']})")
    stage1 = input_path("stage1_model", params["stage1_model"], "a stage-1 results folder")
    models = stage2_models(params["models"])
    predictor = Predictor(stage1, models, tta=params["tta"], device=params["device"],
                          margin=int(params.get("margin", 0)),  # the crops of training had roi's margin
                          segmentations=params["save_segmentations"], keep_volume=params["save_segmentations"],
                          gap_factor=params.get("max_gap_factor", DEFAULT_FACTOR))
    ctx.reporter.log(predictor.describe())

    out = ctx.workspace.predictions / ctx.job_id
    cases = out / "cases"
    cases.mkdir(parents=True, exist_ok=True)
    rows, lines = [], []
    points = split_localizers(ctx.workspace.dataset(params["dataset"]), params["split"], ctx.reporter.log)
    for index, (uid, path) in enumerate(inputs):
        prediction = predictor.predict_series(path, uid)
        write_case(cases / uid, prediction)
        write_review_extras(cases / uid, prediction, path, points.get(uid, []))
        rows.append(prediction.row())
        lines.append(case_line(prediction))
        if prediction.status != "ok":
            ctx.reporter.log(f"series {uid}: {prediction.status}, 0.5 everywhere ({prediction.reason})")
        elif prediction.fallback or any(b.fallback for b in prediction.boxes):
            ctx.reporter.log(f"series {uid}: conversion fallback {prediction.fallback or '-'}, box fallback "
                             f"{', '.join(b.fallback for b in prediction.boxes if b.fallback) or '-'}")
        if prediction.slice_gap:
            ctx.reporter.log(f"series {uid}: {prediction.slice_gap}")
        ctx.reporter.progress(index + 1, len(inputs), f"{uid} {prediction.seconds:.1f} s")

    predictions = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
    write_csv(predictions, out / PREDICTIONS_FILE)
    case_table = pd.DataFrame(lines, columns=CASE_COLUMNS)
    box_columns = ["z0", "z1", "y0", "y1", "x0", "x1"]
    case_table[box_columns] = case_table[box_columns].astype("Int64")  # integers, blank where no box
    write_csv(case_table, out / CASES_FILE)
    ok = [line["seconds"] for line in lines if line["status"] == "ok"]
    if ok:
        ctx.reporter.metric("seconds_per_series", float(np.mean(ok)))
    ctx.reporter.metric("series_failed", float(sum(line["status"] == FAILED for line in lines)))
    ctx.reporter.metric("series_empty", float(sum(line["status"] == EMPTY for line in lines)))
    ctx.reporter.artefact("predictions", out / PREDICTIONS_FILE)
    ctx.reporter.artefact("cases", out / CASES_FILE)
    ctx.reporter.artefact("review", cases)
    ctx.reporter.log(f"{len(rows)} series predicted into {out / PREDICTIONS_FILE}")
    if truth_path is not None:
        ctx.reporter.artefact("truth", truth_path)
        score(predictions, truth_path, out, ctx)
    else:
        ctx.reporter.log("no truth table for these series: not scored")
