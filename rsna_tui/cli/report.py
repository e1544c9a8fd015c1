"""``rsna-tui report``: the result table of a pipeline run (what ``make demo`` prints at the end).

It answers "did the models learn, and what did it cost": the held-out competition score of the latest
successful ``predict`` job with its ``Aneurysm Present`` AUC and mean location AUC, the stage-1
coverage of truth aneurysm points on series the 2D model never saw
(``engine.stage1.held_out_coverage``), wall minutes per stage of that run, and where to look next.
Everything comes from the job store and the workspace's files; nothing is recomputed but the
coverage, which only reads boxes and truth points.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from engine.labels import ANEURYSM_PRESENT, LOCATIONS
from rsna_tui.cli.common import app, print_json, print_table, state_of
from rsna_tui.jobs.manager import JobError, JobManager
from rsna_tui.jobs.store import JobRow

#: Pipeline stages in run order (their jobs are summed per stage: convert and roi run once per split).
RUN_STAGES = ("demo-data", "convert", "stage1-data", "train2d", "roi", "train3d", "finetune1", "finetune2",
              "predict", "evaluate")


def _latest_predict(manager: JobManager, job_id: int | None) -> JobRow:
    if job_id is not None:
        job = manager.job(job_id)
        if job.stage != "predict":
            raise JobError(f"job {job_id} is a {job.stage} job; report needs a predict job")
        return job
    jobs = manager.store.list_jobs(status="succeeded", stage="predict", limit=1)
    if not jobs:
        raise JobError("no successful predict job in this workspace yet; run the pipeline first "
                       "(rsna-tui pipeline --profile demo --follow)")
    return jobs[0]


def _run_jobs(manager: JobManager, predict: JobRow) -> list[JobRow]:
    """The succeeded jobs of the run that ended with ``predict``: for each stage and split, the latest
    one created before it and after the previous predict job (so an earlier run is not counted)."""
    earlier = [j.id for j in manager.store.list_jobs(stage="predict") if j.id < predict.id]
    start = max(earlier, default=0)
    chosen: dict[tuple[str, str], JobRow] = {}
    for job in manager.store.list_jobs(status="succeeded"):
        if start < job.id <= predict.id and job.stage in RUN_STAGES:
            key = (job.stage, str(job.params.get("split", "")))
            if key not in chosen or job.id > chosen[key].id:
                chosen[key] = job
    return sorted(chosen.values(), key=lambda j: j.id)


def _minutes(jobs: list[JobRow]) -> dict[str, float]:
    out: dict[str, float] = {}
    for job in jobs:
        if job.started_at and job.finished_at:
            out[job.stage] = out.get(job.stage, 0.0) + (job.finished_at - job.started_at) / 60.0
    return out


def _coverage(manager: JobManager, predict: JobRow, dataset: str) -> dict[str, Any]:
    """Held-out and unseen-training coverage, or the reason it cannot be computed here."""
    from engine.stage1.held_out_coverage import held_out_coverage, unseen_train_coverage

    layout = manager.workspace.layout
    review = Path(manager.store.artefacts(predict.id).get("review", layout.predictions / str(predict.id) / "cases"))
    truth = layout.dataset(dataset) / "aneurysms.csv"
    result: dict[str, Any] = {}
    for name, function in (("test", lambda: held_out_coverage(review, truth)),
                           ("train_unseen", lambda: unseen_train_coverage(layout, dataset))):
        try:
            c = function()
            result[name] = {"fraction": c.fraction, "inside": c.inside, "points": c.points, "series": c.series}
        except FileNotFoundError as exc:
            result[name] = {"fraction": None, "reason": str(exc)}
    return result


def build_report(manager: JobManager, job_id: int | None = None) -> dict[str, Any]:
    """The report as a dict (the ``--json`` output)."""
    predict = _latest_predict(manager, job_id)
    metrics = {k: v["value"] for k, v in manager.store.last_metrics(predict.id).items()}
    locations = [metrics[f"auc/{c}"] for c in LOCATIONS if f"auc/{c}" in metrics]
    jobs = _run_jobs(manager, predict)
    minutes = _minutes(jobs)
    started = [j.started_at for j in jobs if j.started_at]
    return {
        "predict_job": predict.id,
        "profile": predict.profile,
        "dataset": predict.params.get("dataset"),
        "series": _scored_series(manager, predict),
        "score": metrics.get("score"),
        "ap_auc": metrics.get(f"auc/{ANEURYSM_PRESENT}"),
        "mean_location_auc": sum(locations) / len(locations) if len(locations) == len(LOCATIONS) else None,
        "coverage": _coverage(manager, predict, str(predict.params.get("dataset", "demo"))),
        "minutes": minutes,
        "wall_minutes": (predict.finished_at - min(started)) / 60.0 if started and predict.finished_at else None,
        "jobs": [j.id for j in jobs],
        "load_average": list(os.getloadavg()),
    }


def _scored_series(manager: JobManager, predict: JobRow) -> int | None:
    """Series the score is computed on (``metrics.json`` of the predict job), else the predicted ones."""
    path = manager.store.artefacts(predict.id).get("metrics")
    if path and Path(path).is_file():
        return int(json.loads(Path(path).read_text()).get("n_series") or 0) or None
    return manager.store.count_case_predictions(predict.id) or None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _coverage_cell(entry: dict[str, Any]) -> str:
    if entry.get("fraction") is None:
        return "n/a (" + entry.get("reason", "no points") + ")"
    return f"{entry['fraction']:.3f} ({entry['inside']}/{entry['points']} points, {entry['series']} series)"


@app.command()
def report(
    ctx: typer.Context,
    job_id: int = typer.Option(None, "--job", help="A predict job (default: the latest successful one)"),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON"),
) -> None:
    """Result table of the latest pipeline run: held-out score, AUCs, stage-1 coverage, minutes per stage."""
    state = state_of(ctx)
    manager = state.refreshed()
    data = build_report(manager, job_id)
    if as_json:
        print_json(data)
        return
    rows = [
        ["score (held out)", _fmt(data["score"]) + (f" on {data['series']} series" if data["series"] else "")],
        ["Aneurysm Present AUC", _fmt(data["ap_auc"])],
        ["mean location AUC", _fmt(data["mean_location_auc"])],
        ["stage-1 coverage, held-out series", _coverage_cell(data["coverage"]["test"])],
        ["stage-1 coverage, training series without vessel masks", _coverage_cell(data["coverage"]["train_unseen"])],
    ]
    rows += [[f"minutes {stage}", f"{data['minutes'][stage]:.2f}"] for stage in RUN_STAGES if stage in data["minutes"]]
    rows.append(["minutes, whole run (wall)", _fmt(data["wall_minutes"], 2)])
    rows.append(["load average (1, 5, 15 min)", ", ".join(f"{v:.2f}" for v in data["load_average"])])
    print_table(f"pipeline run ending with predict job {data['predict_job']} (profile {data['profile']})",
                ["result", "value"], rows)
    where = f"--db {state.db}" if state.readonly else f"-w {manager.workspace.root}"
    predictions = manager.store.artefacts(data["predict_job"]).get("predictions", "")
    typer.echo("\nwhere to look next:")
    typer.echo(f"  rsna-tui {where} jobs                      every job of the run, with its status and time")
    typer.echo(f"  rsna-tui {where} show {data['predict_job']}                    the predict job: metrics, artefacts")
    typer.echo(f"  rsna-tui {where}                           the app: curves per job; the review screen sorts "
               "cases by error")
    review = manager.store.artefacts(data["predict_job"]).get("review", "")
    if predictions:
        typer.echo(f"  {Path(predictions)}   the predictions, one row per held-out series")
    if review:
        typer.echo(f"  {Path(review)}/<series>/   per-case review files (box, maps) the review screen shows")
