"""Folding events into SQLite: concurrent writers and folders, partial lines, idempotence."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from engine.labels import LABEL_COLUMNS
from rsna_tui.jobs.events import EventWriter
from rsna_tui.jobs.fold import fold_job
from rsna_tui.jobs.store import JobRow, Store

REPO = Path(__file__).resolve().parents[2]
WRITERS = 8
EVENTS_PER_WRITER = 250

WRITER = """
import sys, time
from pathlib import Path
from rsna_tui.jobs.events import EventWriter
writer = EventWriter(Path(sys.argv[1]))
for step in range(int(sys.argv[2])):
    writer.emit("metric", name="loss", value=step / 10, step=step)
    if step % 25 == 0:
        writer.emit("resource", cpu_percent=10.0, rss_bytes=1000)
    time.sleep(0.003)
writer.emit("finished", status="succeeded", exit_code=0, error=None)
"""

FOLDER = """
import sys, time
from pathlib import Path
from rsna_tui.jobs.fold import fold_job
from rsna_tui.jobs.store import Store
ws, n = Path(sys.argv[1]), int(sys.argv[2])
store = Store(ws / "jobs.db")
partial = 0
while True:
    last = (ws / "writers-done").exists()  # read before folding: a final full pass follows
    for job_id in range(1, n + 1):
        result = fold_job(store, job_id, ws / "jobs" / str(job_id))
        partial += result.events > 0 and result.status == "running"
    if last:
        break
    time.sleep(0.005)
print(partial)
"""


def _jobs(store: Store, n: int) -> None:
    for _ in range(n):
        store.insert_job(JobRow(id=0, stage="test-sleep", profile="tiny", params={}, status="running", created_at=time.time()))


def test_eight_writers_and_concurrent_folders_lose_and_duplicate_nothing(workspace: Path) -> None:
    with Store(workspace / "jobs.db") as store:
        _jobs(store, WRITERS)
    for job_id in range(1, WRITERS + 1):
        (workspace / "jobs" / str(job_id)).mkdir(parents=True)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    folders = [
        subprocess.Popen([sys.executable, "-c", FOLDER, str(workspace), str(WRITERS)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(workspace / "jobs" / str(i) / "events.jsonl"),
                          str(EVENTS_PER_WRITER)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(1, WRITERS + 1)
    ]
    outputs = [p.communicate(timeout=120) + (p.returncode,) for p in writers]
    (workspace / "writers-done").touch()
    outputs += [p.communicate(timeout=120) + (p.returncode,) for p in folders]
    for out, err, code in outputs:
        assert code == 0 and "locked" not in err, err
    folds_while_writing = sum(int(out) for out, _, _ in outputs[WRITERS:])
    assert folds_while_writing > 2 * WRITERS, "the folders did not overlap the writers"
    with Store(workspace / "jobs.db") as store:
        for job_id in range(1, WRITERS + 1):
            rows = store.conn.execute("SELECT step FROM metrics WHERE job_id = ? ORDER BY step", (job_id,)).fetchall()
            assert [r[0] for r in rows] == list(range(EVENTS_PER_WRITER)), f"job {job_id}: lost or doubled events"
            samples = store.conn.execute("SELECT COUNT(*) FROM resource_samples WHERE job_id = ?", (job_id,)).fetchone()
            assert samples[0] == EVENTS_PER_WRITER // 25
            job = store.get_job(job_id)
            assert job is not None and job.status == "succeeded"
            assert job.events_offset == (workspace / "jobs" / str(job_id) / "events.jsonl").stat().st_size


def _started_job(workspace: Path, store: Store) -> tuple[Path, EventWriter]:
    """Job 1, running, whose events.jsonl already holds its ``started`` event."""
    job_dir = workspace / "jobs" / "1"
    job_dir.mkdir(parents=True)
    _jobs(store, 1)
    writer = EventWriter(job_dir / "events.jsonl")
    writer.emit("started", pid=1, host="h")
    return job_dir, writer


def test_partial_line_waits_and_refolding_is_idempotent(workspace: Path) -> None:
    with Store(workspace / "jobs.db") as store:
        job_dir, writer = _started_job(workspace, store)
        writer.emit("metric", name="dice", value=0.5, step=0)
        writer.close()
        with (job_dir / "events.jsonl").open("a") as handle:
            handle.write('{"t": 1.0, "type": "metric", "name": "dice", "val')  # a line being written
        first = fold_job(store, 1, job_dir)
        assert first.events == 2 and first.status == "running"
        assert fold_job(store, 1, job_dir).events == 0
        with (job_dir / "events.jsonl").open("a") as handle:
            handle.write('ue": 0.75, "step": 1}\nnot json\n')
        second = fold_job(store, 1, job_dir)
        assert second.events == 1 and second.bad_lines == 1
        assert store.metric_series(1, "dice") == [(0, 0.5), (1, 0.75)]


def test_undefined_metric_values_leave_a_gap_and_do_not_stop_folding(workspace: Path) -> None:
    """nnU-Net reports NaN pseudo-Dice for a class absent from a batch; SQLite cannot store NaN."""
    with Store(workspace / "jobs.db") as store:
        job_dir, writer = _started_job(workspace, store)
        for step, value in enumerate([0.5, float("nan"), float("inf"), 0.75]):
            writer.emit("metric", name="dice", value=value, step=step)
        writer.emit("finished", status="succeeded", exit_code=0)
        writer.close()
        assert fold_job(store, 1, job_dir).events == 6
        assert store.metric_series(1, "dice") == [(0, 0.5), (3, 0.75)]
        assert store.get_job(1).status == "succeeded"


def test_finished_job_with_predictions_fills_case_predictions(workspace: Path) -> None:
    job_dir = workspace / "jobs" / "1"
    job_dir.mkdir(parents=True)
    csv_path = job_dir / "predictions.csv"
    header = ["SeriesInstanceUID", *LABEL_COLUMNS]
    csv_path.write_text(
        ",".join(f'"{h}"' for h in header) + "\n"
        + "1.2.3," + ",".join(["0.1"] * 13) + ",0.9\n"
        + "1.2.4," + ",".join(["0.2"] * 13) + ",0.3\n"
    )
    cases_path = job_dir / "cases.csv"  # the per-case table: seconds and errors live here
    cases_path.write_text("SeriesInstanceUID,status,seconds,fallback,reason\n"
                          "1.2.3,ok,4.5,resampled,\n1.2.4,failed,,,cannot read the series: bad file\n")
    with Store(workspace / "jobs.db") as store:
        _jobs(store, 1)
        writer = EventWriter(job_dir / "events.jsonl")
        writer.emit("artefact", name="predictions", path=str(csv_path))
        writer.emit("artefact", name="cases", path=str(cases_path))
        writer.emit("finished", status="succeeded", exit_code=0, error=None)
        writer.close()
        fold_job(store, 1, job_dir)
        fold_job(store, 1, job_dir)
        cases = store.case_predictions(1)
        assert [c["series_uid"] for c in cases] == ["1.2.3", "1.2.4"]
        assert cases[0]["probabilities"] == [0.1] * 13 + [0.9] and cases[0]["seconds"] == 4.5
        assert cases[1]["seconds"] is None
        assert cases[0]["error"] is None and cases[1]["error"] == "failed: cannot read the series: bad file"
        present = store.conn.execute("SELECT aneurysm_present FROM case_predictions ORDER BY series_uid").fetchall()
        assert [r[0] for r in present] == [0.9, 0.3]
        assert cases[0]["truth"] is None
        truth_path = workspace / "truth.csv"
        truth_path.write_text(
            ",".join(f'"{h}"' for h in ["SeriesInstanceUID", "PatientAge", *LABEL_COLUMNS]) + "\n"
            + "1.2.3,61," + ",".join(["0"] * 13) + ",1\n"
            + "1.2.4,40," + ",".join(["0"] * 5) + ",1," + ",".join(["0"] * 7) + ",1\n"
        )
        scorer = store.insert_job(JobRow(id=0, stage="evaluate", profile="tiny", status="running", created_at=1.0,
                                         params={"predictions": str(csv_path), "truth": str(truth_path)}))
        scorer_dir = workspace / "jobs" / str(scorer.id)
        scorer_dir.mkdir()
        writer = EventWriter(scorer_dir / "events.jsonl")
        writer.emit("finished", status="succeeded", exit_code=0, error=None)
        writer.close()
        fold_job(store, scorer.id, scorer_dir)
        truths = {c["series_uid"]: c["truth"] for c in store.case_predictions(1)}
        assert truths == {"1.2.3": [0] * 13 + [1], "1.2.4": [0] * 5 + [1] + [0] * 7 + [1]}
