"""A real tiny ``predict`` job for the review tests, built once per session (about 15 s of CPU).

The demo cohort's training split (it has localizers and truth), plus a left-right mirror of its axial
series with the most localizer points (pixels flipped along the columns, geometry unchanged, so the patient
is mirrored; the points move to ``columns - 1 - x`` and the truth's Left / Right columns swap). Models
are ``engine.inference.synthetic`` folders at 32^3; the stage runs in this process with the job
runner's event reporter, and the events are folded into a real ``jobs.db``, as the job manager does.
"""
from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from pydicom.uid import generate_uid

from engine.context import StageContext, WorkspaceLayout
from engine.labels import LOCATIONS
from rsna_tui.jobs.events import EVENTS, EventReporter, EventWriter
from rsna_tui.jobs.fold import fold_job
from rsna_tui.jobs.manager import JobManager
from rsna_tui.workspace import Workspace



def axial_with_points(dataset: Path) -> str:
    """The demo's single-file-per-slice axial training series with the most localizer points, at least
    one of them on a Left / Right location (the mirror test needs a side)."""
    series = pd.read_csv(dataset / "demo_series.csv", dtype={"SeriesInstanceUID": str})
    points = pd.read_csv(dataset / "train_localizers.csv", dtype=str)
    lateral = points[points["location"].str.match(r"(Left|Right) ")]["SeriesInstanceUID"]
    axial = series[(series["split"] == "train") & (series["orientation"] == "axial") & (series["multiframe"] == 0)
                   & series["SeriesInstanceUID"].isin(lateral)]
    counts = points["SeriesInstanceUID"].value_counts()
    return max(axial["SeriesInstanceUID"], key=lambda uid: (counts.get(uid, 0), uid))


@dataclass
class ReviewJob:
    workspace: Path
    dataset: Path
    job_id: int
    original: str
    mirror: str

    @property
    def db(self) -> Path:
        return self.workspace / "jobs.db"

    @property
    def predictions(self) -> Path:
        return self.workspace / "predictions" / str(self.job_id)


def mirrored_name(location: str) -> str:
    if location.startswith("Left "):
        return "Right " + location[5:]
    if location.startswith("Right "):
        return "Left " + location[6:]
    return location


def mirror_series(dataset: Path, uid: str) -> str:
    """Add the left-right mirror of training series ``uid`` (folder, train.csv row, localizer rows)."""
    new_uid = generate_uid(entropy_srcs=[uid, "mirror"])
    source, target = dataset / "series" / uid, dataset / "series" / new_uid
    target.mkdir()
    sops = {}
    for path in sorted(source.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array[..., ::-1].copy()
        ds.PixelData = pixels.tobytes()
        sop = generate_uid(entropy_srcs=[str(ds.SOPInstanceUID), "mirror"])
        sops[str(ds.SOPInstanceUID)] = sop
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SeriesInstanceUID = new_uid
        ds.save_as(target / f"{sop}.dcm")
        columns = int(ds.Columns)
    train = pd.read_csv(dataset / "train.csv", dtype={"SeriesInstanceUID": str})
    row = train[train["SeriesInstanceUID"] == uid].iloc[0].copy()
    flipped = row.copy()
    for location in LOCATIONS:
        flipped[mirrored_name(location)] = row[location]
    flipped["SeriesInstanceUID"] = new_uid
    pd.concat([train, flipped.to_frame().T]).to_csv(dataset / "train.csv", index=False)
    points = pd.read_csv(dataset / "train_localizers.csv", dtype=str)
    mirrored = []
    for _, point in points[points["SeriesInstanceUID"] == uid].iterrows():
        xy = ast.literal_eval(point["coordinates"])
        xy["x"] = round(columns - 1 - xy["x"], 2)
        mirrored.append({"SeriesInstanceUID": new_uid, "SOPInstanceUID": sops[point["SOPInstanceUID"]],
                         "coordinates": str(xy), "location": mirrored_name(point["location"])})
    pd.concat([points, pd.DataFrame(mirrored)]).to_csv(dataset / "train_localizers.csv", index=False)
    return new_uid


def build_review_job(root: Path, demo_cohort: Path) -> ReviewJob:
    from engine.inference import run as predict  # torch: only when a review test runs
    from engine.inference.synthetic import write_stage2_model, write_threshold_stage1_model

    workspace = root / "ws"
    dataset = workspace / "datasets" / "demo"
    shutil.copytree(demo_cohort, dataset)
    original = axial_with_points(dataset)
    mirror = mirror_series(dataset, original)
    models = workspace / "models"
    stage1 = write_threshold_stage1_model(models / "s1", patch=(32, 32), spacing=(4.0, 4.0))
    stage2 = [write_stage2_model(models / f"f{i}", [4, 8, 16, 32], [1, 1, 1, 1], 32, seed=i, fold=i) for i in (1, 2)]
    manager = JobManager(Workspace(workspace))
    try:
        job = manager.submit("predict", "tiny", {
            "dataset": "demo", "split": "train", "models": ",".join(map(str, stage2)), "stage1_model": str(stage1),
            "tta": 1, "device": "cpu", "save_segmentations": True,
        }, start=False)
        job_dir = manager.job_dir(job)
        writer = EventWriter(job_dir / EVENTS)
        writer.emit("started", host="test")
        ctx = StageContext(WorkspaceLayout(workspace), job_dir, EventReporter(writer), job_id=str(job.id),
                           stage="predict")
        predict(job.params, ctx)
        writer.emit("finished", status="succeeded", exit_code=0)
        writer.close()
        fold_job(manager.store, job.id, job_dir)
    finally:
        manager.close()
    return ReviewJob(workspace, dataset, job.id, original, mirror)


@pytest.fixture(scope="session")
def review_job(tmp_path_factory: pytest.TempPathFactory, demo_cohort: Path) -> ReviewJob:
    return build_review_job(tmp_path_factory.mktemp("review"), demo_cohort)
