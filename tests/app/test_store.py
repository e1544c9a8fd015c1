"""The job store: creation, migration of older files, refusal of newer ones, read-only opening."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from rsna_tui.jobs.store import SCHEMA_VERSION, JobRow, SchemaError, Store

#: The version-1 schema, written by hand as a version-1 rsna-tui would have left it.
V1_SCHEMA = """
CREATE TABLE schema_version (id INTEGER NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (id));
INSERT INTO schema_version VALUES (1, 1);
CREATE TABLE jobs (
    id INTEGER NOT NULL, stage VARCHAR NOT NULL, profile VARCHAR NOT NULL, params VARCHAR NOT NULL,
    function VARCHAR, status VARCHAR NOT NULL, backend VARCHAR NOT NULL, native_id VARCHAR, host VARCHAR,
    proc_create_time FLOAT, attempt INTEGER NOT NULL, parent_id INTEGER, depends_on VARCHAR NOT NULL,
    gpu BOOLEAN NOT NULL, resume BOOLEAN NOT NULL, created_at FLOAT NOT NULL, started_at FLOAT,
    finished_at FLOAT, exit_code INTEGER, error VARCHAR, events_offset INTEGER NOT NULL, PRIMARY KEY (id)
);
CREATE INDEX ix_jobs_status ON jobs (status);
CREATE INDEX ix_jobs_parent_id ON jobs (parent_id);
CREATE INDEX ix_jobs_stage_created ON jobs (stage, created_at);
CREATE INDEX ix_jobs_created_at ON jobs (created_at);
CREATE TABLE metrics (
    id INTEGER NOT NULL, job_id INTEGER NOT NULL, step INTEGER, name VARCHAR NOT NULL, value FLOAT NOT NULL,
    t FLOAT NOT NULL, PRIMARY KEY (id), FOREIGN KEY(job_id) REFERENCES jobs (id)
);
CREATE INDEX ix_metrics_job_name_step ON metrics (job_id, name, step);
CREATE TABLE resource_samples (
    id INTEGER NOT NULL, job_id INTEGER NOT NULL, t FLOAT NOT NULL, cpu_percent FLOAT NOT NULL,
    rss_bytes INTEGER NOT NULL, gpu_mem_bytes INTEGER, gpu_util FLOAT, proc_gpu_mem_bytes INTEGER,
    PRIMARY KEY (id), FOREIGN KEY(job_id) REFERENCES jobs (id)
);
CREATE INDEX ix_resource_samples_job_t ON resource_samples (job_id, t);
CREATE TABLE case_predictions (
    id INTEGER NOT NULL, job_id INTEGER NOT NULL, series_uid VARCHAR NOT NULL, probabilities VARCHAR NOT NULL,
    aneurysm_present FLOAT NOT NULL, truth VARCHAR, seconds FLOAT, error VARCHAR, PRIMARY KEY (id),
    CONSTRAINT uq_case_predictions_job_series UNIQUE (job_id, series_uid), FOREIGN KEY(job_id) REFERENCES jobs (id)
);
INSERT INTO jobs (id, stage, profile, params, status, backend, attempt, depends_on, gpu, resume, created_at,
                  events_offset, finished_at, exit_code)
    VALUES (7, 'train3d', 'tiny', '{"epochs": 3}', 'succeeded', 'local', 1, '[]', 1, 0, 1700000000.0, 120,
            1700000100.0, 0);
INSERT INTO metrics (job_id, step, name, value, t) VALUES (7, 2, 'train_loss', 0.25, 1700000050.0);
"""


def _schema(path: Path) -> dict[str, object]:
    """Tables -> sorted (column, type, notnull, pk), and index -> columns; order-insensitive."""
    conn = sqlite3.connect(path)
    out: dict[str, object] = {}
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
        out[table] = sorted((r[1], r[2], r[3], r[5]) for r in conn.execute(f"PRAGMA table_info({table})"))
        for index in conn.execute(f"PRAGMA index_list({table})"):
            out[f"{table}.{index[1]}"] = [r[2] for r in conn.execute(f"PRAGMA index_info('{index[1]}')")]
    conn.close()
    return out


def _write_v1(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.close()


def test_new_database_is_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    with Store(tmp_path / "jobs.db") as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        job = store.insert_job(JobRow(id=0, stage="convert", profile="tiny", params={"workers": 2},
                                      status="queued", created_at=time.time(), depends_on=[3]))
        again = store.get_job(job.id)
    assert again is not None and again.params == {"workers": 2} and again.depends_on == [3] and again.gpu is False


def test_version1_database_is_upgraded_in_place_keeping_its_rows(tmp_path: Path) -> None:
    old = tmp_path / "old" / "jobs.db"
    old.parent.mkdir()
    _write_v1(old)
    with Store(old) as store:
        assert store.schema_version() == SCHEMA_VERSION
        job = store.get_job(7)
        assert job is not None and job.stage == "train3d" and job.params == {"epochs": 3} and job.gpu is True
        assert job.progress is None and job.message is None and job.gpu_slot is None
        assert store.last_metrics(7)["train_loss"]["value"] == 0.25
        store.conn.execute("INSERT INTO artefacts (job_id, name, path, t) VALUES (7, 'model', '/m', 1.0)")
        assert store.artefacts(7) == {"model": "/m"}
    fresh = tmp_path / "fresh" / "jobs.db"
    Store(fresh).close()
    assert _schema(old) == _schema(fresh), "migrations and the SQLModel classes disagree"


def test_newer_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    _write_v1(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 5,))
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaError, match=r"newer rsna-tui.*untouched"):
        Store(path)
    assert path.read_bytes() == before


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE something (x)")
    conn.close()
    with pytest.raises(SchemaError, match="not written by rsna-tui"):
        Store(path)


def test_read_only_store_reads_but_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with Store(path) as store:
        store.insert_job(JobRow(id=0, stage="evaluate", profile="tiny", params={}, status="succeeded", created_at=1.0))
    with Store(path, readonly=True) as ro:
        assert [j.stage for j in ro.list_jobs()] == ["evaluate"]
        with pytest.raises(PermissionError):
            ro.update_job(1, status="failed")
    old = tmp_path / "old.db"
    _write_v1(old)
    with pytest.raises(SchemaError, match="read-only"):
        Store(old, readonly=True)


def test_job_list_json_built_by_sqlite_equals_the_rows_to_json(tmp_path: Path) -> None:
    with Store(tmp_path / "jobs.db") as store:
        store.insert_job(JobRow(id=0, stage="train3d", profile="full", params={"features": [32, 64], "lr": 0.01},
                                status="running", created_at=1795783291.913456, started_at=1795783292.5,
                                proc_create_time=1795783291.91, progress=1 / 3, gpu=True, gpu_slot=0,
                                native_id="123", host="node1", depends_on=[1, 2], message='quote " and \\ slash'))
        store.insert_job(JobRow(id=0, stage="evaluate", profile="tiny", params={}, status="failed", created_at=0.5,
                                finished_at=3.0, exit_code=1, error="KeyError: 'x'\nline two", resume=True, parent_id=1))
        for status, stage in ((None, None), ("running", None), (None, "evaluate"), ("lost", None)):
            expected = [job.to_json() for job in store.list_jobs(status=status, stage=stage)]
            assert json.loads(store.list_jobs_json(status=status, stage=stage)) == expected
        assert [j["id"] for j in json.loads(store.list_jobs_json(limit=1))] == [2]


def test_sqlmodel_classes_read_what_the_store_wrote(tmp_path: Path) -> None:
    from sqlmodel import Session, select

    from rsna_tui.jobs.models import Job, Metric

    with Store(tmp_path / "jobs.db") as store:
        job = store.insert_job(JobRow(id=0, stage="train2d", profile="tiny", params={"epochs": 3}, status="running",
                                      created_at=10.0, gpu=True))
        store.conn.execute("INSERT INTO metrics (job_id, step, name, value, t) VALUES (?, 0, 'train_loss', 0.7, 11.0)",
                           (job.id,))
        with Session(store.sqlalchemy_engine()) as session:
            row = session.exec(select(Job).where(Job.status == "running")).one()
            assert (row.id, row.stage, row.gpu, json.loads(row.params)) == (job.id, "train2d", True, {"epochs": 3})
            assert session.exec(select(Metric.value).where(Metric.job_id == job.id)).all() == [0.7]
