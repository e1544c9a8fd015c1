"""``jobs.db``: opening it (WAL, busy timeout), versioning and migrating it, and the queries.

Concurrency model: several processes (CLI commands, the TUI, the scheduler) open the same file.
Every write happens in a ``BEGIN IMMEDIATE`` transaction, so a writer takes the write lock before
it reads the rows it will change (no lost updates, no upgrade deadlock), and waits up to
``BUSY_TIMEOUT_S`` for another writer instead of failing with "database is locked". WAL lets
readers proceed while one process writes.

Schema: a new database is created from the SQLModel classes of :mod:`rsna_tui.jobs.models`
(the newest schema); an older one is upgraded in place by the ordered :data:`MIGRATIONS`; a newer
one is refused, never dropped. Queries use :mod:`sqlite3` directly so that a CLI command does not
pay for importing SQLAlchemy (see the models module).

Errors: whatever SQLite says about the file (not a database, damaged, locked, read-only, disk
full) leaves this module as a :class:`StoreError` whose one-line message names the file and what
to do (``rsna-tui doctor`` rebuilds a damaged database from the job folders). A refused file is
never written to.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

from rsna_tui.jobs.store_errors import (  # noqa: F401  (SchemaError, StoreError: part of this module's API)
    BUSY_TIMEOUT_S, SchemaError, StoreError, _guarded, busy_timeout, on_read_only_fs, store_error, translated,
)

#: The schema version this code writes (mirrors ``models.SCHEMA_VERSION`` without importing it).
SCHEMA_VERSION = 3

ACTIVE = ("queued", "starting", "running")
TERMINAL = ("succeeded", "failed", "cancelled", "lost")
STATUSES = ACTIVE + TERMINAL

#: Upgrade steps: MIGRATIONS[n] turns a version n-1 database into version n. Append only; never
#: edit a released step. Version 1 had jobs, metrics, resource samples and case predictions;
#: version 2 added the artefacts table, the job list's progress / message and the GPU slot;
#: version 3 the planner's fingerprint of a job's parameters and inputs.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE jobs ADD COLUMN gpu_slot INTEGER",
        "ALTER TABLE jobs ADD COLUMN progress FLOAT",
        "ALTER TABLE jobs ADD COLUMN message VARCHAR",
        """CREATE TABLE artefacts (
            job_id INTEGER NOT NULL,
            name VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            t FLOAT NOT NULL,
            PRIMARY KEY (job_id, name),
            FOREIGN KEY(job_id) REFERENCES jobs (id)
        )""",
    ),
    3: (
        "ALTER TABLE jobs ADD COLUMN fingerprint VARCHAR",
        "CREATE INDEX ix_jobs_fingerprint ON jobs (fingerprint)",
    ),
}


@dataclass
class JobRow:
    """One row of ``jobs``, with the JSON columns decoded."""

    id: int
    stage: str
    profile: str
    params: dict[str, Any]
    status: str
    created_at: float
    function: str | None = None
    backend: str = "local"
    native_id: str | None = None
    host: str | None = None
    proc_create_time: float | None = None
    attempt: int = 1
    parent_id: int | None = None
    depends_on: list[int] = field(default_factory=list)
    gpu: bool = False
    gpu_slot: int | None = None
    resume: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    events_offset: int = 0
    progress: float | None = None
    message: str | None = None
    fingerprint: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "JobRow":
        """From a row of :data:`JOB_SELECT` (its columns are the fields, in order)."""
        job = cls(*row)
        job.params = json.loads(job.params)  # type: ignore[arg-type]
        job.depends_on = json.loads(job.depends_on) if job.depends_on not in ("[]", "", None) else []  # type: ignore[arg-type]
        job.gpu, job.resume = bool(job.gpu), bool(job.resume)
        return job

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: times as ISO 8601 UTC strings."""
        data = {name: getattr(self, name) for name in _JOB_FIELDS}  # asdict() deep-copies: 5x slower
        for key in _TIME_FIELDS:
            data[key.removesuffix("_at")] = iso(data.pop(key))
        return data


_JOB_FIELDS = tuple(f.name for f in fields(JobRow))
JOB_SELECT = "SELECT " + ", ".join(_JOB_FIELDS) + " FROM jobs"


def iso(t: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC to the second (None stays None)."""
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


_TIME_FIELDS = ("created_at", "started_at", "finished_at")


def _json_expression(name: str) -> str:
    """SQL for one field of ``JobRow.to_json()``."""
    if name in _TIME_FIELDS:
        return f"'{name.removesuffix('_at')}', strftime('%Y-%m-%dT%H:%M:%S+00:00', {name}, 'unixepoch')"
    if name in ("params", "depends_on"):
        return f"'{name}', json({name})"
    if name in ("gpu", "resume"):
        return f"'{name}', json(CASE WHEN {name} THEN 'true' ELSE 'false' END)"
    if name in ("proc_create_time", "progress"):  # json_object keeps only 15 digits of a REAL
        return f"'{name}', CASE WHEN {name} IS NULL THEN NULL ELSE json(printf('%!.17g', {name})) END"
    return f"'{name}', {name}"


_JSON_OBJECT = "json_object(" + ", ".join(_json_expression(n) for n in _JOB_FIELDS) + ")"


def _job_filter(status: Sequence[str] | str | None, stage: str | None, limit: int | None) -> tuple[str, list[Any]]:
    """WHERE / ORDER / LIMIT of a job listing, newest first, and its arguments."""
    clauses, args = [], []
    if status:
        statuses = [status] if isinstance(status, str) else list(status)
        clauses.append(f"status IN ({', '.join('?' for _ in statuses)})")
        args.extend(statuses)
    if stage:
        clauses.append("stage = ?")
        args.append(stage)
    sql = (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY id DESC"
    if limit:
        sql += " LIMIT ?"
        args.append(limit)
    return sql, args


class Store:
    """An open ``jobs.db``. One per process is enough; not shared between threads."""

    def __init__(self, path: Path | str, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._in_write = False
        if readonly and not self.path.exists():
            raise FileNotFoundError(f"no database at {self.path}")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _create_empty(self.path)
        timeout = busy_timeout()
        with translated(self.path):
            if readonly:  # on read-only media SQLite cannot make the WAL's -shm: nobody writes there anyway
                uri = f"file:{self.path.resolve()}?mode=ro" + ("&immutable=1" if on_read_only_fs(self.path) else "")
                self.conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
            else:
                self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            try:
                self.conn.row_factory = sqlite3.Row
                self.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                self.conn.execute("PRAGMA foreign_keys = ON")
                self._ensure_schema()  # before WAL: a refused file must stay byte for byte as it was
                if not readonly:
                    self.conn.execute("PRAGMA journal_mode = WAL")
                    self.conn.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                self.conn.close()
                raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions and schema ---------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the write lock from its start (``BEGIN IMMEDIATE``).

        Nested use joins the outer transaction.
        """
        if self.readonly:
            raise PermissionError(f"{self.path} is open read-only")
        if self._in_write:
            yield self.conn
            return
        with translated(self.path):
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_write = True
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:  # SQLite may have rolled back already (disk full, damage)
                    self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._in_write = False

    def schema_version(self) -> int:
        """0 for an empty database."""
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" not in tables:
            if tables:
                raise SchemaError(
                    f"{self.path} has tables ({', '.join(sorted(tables))}) but no schema_version: "
                    "it was not written by rsna-tui; use another workspace", self.path,
                )
            return 0
        row = self.conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def _ensure_schema(self) -> None:
        version = self.schema_version()
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.path} has schema version {version}, written by a newer rsna-tui; this one "
                f"knows versions up to {SCHEMA_VERSION}. Upgrade rsna-tui (pip install -U rsna-tui) "
                "or use another workspace; the database was left untouched.", self.path,
            )
        if self.readonly:
            raise SchemaError(
                f"{self.path} has schema version {version} (current {SCHEMA_VERSION}) and is open "
                "read-only; open its workspace with --workspace once to upgrade it", self.path,
            )
        with self.write() as conn:
            version = self.schema_version()  # another process may have done it meanwhile
            if version == 0:
                for statement in _create_statements():
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (id, version) VALUES (1, ?)", (SCHEMA_VERSION,))
                return
            if version > SCHEMA_VERSION:
                raise SchemaError(f"{self.path} was upgraded to version {version} by a newer rsna-tui meanwhile")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute("UPDATE schema_version SET version = ? WHERE id = 1", (target,))

    @_guarded
    def snapshot(self, dest: Path | str) -> Path:
        """A consistent, compacted copy in rollback-journal mode (e.g. ``jobs.db.example``).

        Unlike a copy of a WAL database, it holds every committed row and opens read-only
        (``rsna-tui --db``) without ``-wal`` / ``-shm`` files appearing beside it.
        """
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.unlink(missing_ok=True)
        self.conn.execute("VACUUM INTO ?", (str(tmp),))
        return tmp.replace(dest)

    def sqlalchemy_engine(self) -> Any:
        """A SQLAlchemy engine on the same file, for ORM readers of the models module."""
        from sqlmodel import create_engine

        return create_engine(f"sqlite:///{self.path.resolve()}", connect_args={"timeout": BUSY_TIMEOUT_S})

    # -- jobs ----------------------------------------------------------------------------------

    @_guarded
    def insert_job(self, job: JobRow, keep_id: bool = False) -> JobRow:
        """Insert a new job; its id is assigned here (ids only grow), or kept (``rsna-tui doctor``
        rebuilding rows from job folders)."""
        values = asdict(job)
        if not keep_id:
            values.pop("id")
        values["params"] = json.dumps(values["params"], sort_keys=True)
        values["depends_on"] = json.dumps(values["depends_on"])
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.write() as conn:
            cursor = conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", tuple(values.values()))
            job.id = int(cursor.lastrowid)
        return job

    @_guarded
    def get_job(self, job_id: int) -> JobRow | None:
        row = self.conn.execute(JOB_SELECT + " WHERE id = ?", (job_id,)).fetchone()
        return JobRow.from_row(row) if row else None

    @_guarded
    def update_job(self, job_id: int, **values: Any) -> None:
        if not values:
            return
        if "depends_on" in values:
            values["depends_on"] = json.dumps(values["depends_on"])
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self.write() as conn:
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values.values(), job_id))

    @_guarded
    def list_jobs(
        self, status: Sequence[str] | str | None = None, stage: str | None = None, limit: int | None = None
    ) -> list[JobRow]:
        """Jobs, newest first, optionally filtered by status(es) and stage."""
        where, args = _job_filter(status, stage, limit)
        return [JobRow.from_row(r) for r in self.conn.execute(JOB_SELECT + where, args)]

    @_guarded
    def list_jobs_json(
        self, status: Sequence[str] | str | None = None, stage: str | None = None, limit: int | None = None
    ) -> str:
        """The same jobs as :meth:`list_jobs`, as the JSON list of their ``to_json()``, built by SQLite.

        ``rsna-tui jobs --json`` on 10,000 jobs spends most of its time turning rows into Python
        objects and back; SQLite's JSON functions do it in C, several times faster.
        """
        where, args = _job_filter(status, stage, limit)
        rows = self.conn.execute(f"SELECT {_JSON_OBJECT} FROM jobs{where}", args)
        return "[" + ",".join(r[0] for r in rows) + "]"

    @_guarded
    def count_jobs(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    @_guarded
    def jobs_with_fingerprint(self, stage: str, fingerprint: str) -> list[JobRow]:
        """Jobs of ``stage`` the planner submitted with this fingerprint, newest (highest id) first."""
        rows = self.conn.execute(JOB_SELECT + " WHERE fingerprint = ? AND stage = ? ORDER BY id DESC",
                                 (fingerprint, stage))
        return [JobRow.from_row(r) for r in rows]

    @_guarded
    def active_jobs(self) -> list[JobRow]:
        """Jobs that are queued, starting or running, oldest first."""
        rows = self.conn.execute(JOB_SELECT + " WHERE status IN (?, ?, ?) ORDER BY id", ACTIVE)
        return [JobRow.from_row(r) for r in rows]

    # -- what jobs produced ----------------------------------------------------------------------

    @_guarded
    def last_metrics(self, job_id: int) -> dict[str, dict[str, Any]]:
        """The latest value of each metric of a job: ``{name: {value, step, t}}``."""
        rows = self.conn.execute(
            "SELECT name, value, step, t FROM metrics WHERE id IN "
            "(SELECT MAX(id) FROM metrics WHERE job_id = ? GROUP BY name) ORDER BY name",
            (job_id,),
        )
        return {r["name"]: {"value": r["value"], "step": r["step"], "t": r["t"]} for r in rows}

    @_guarded
    def metric_series(self, job_id: int, name: str) -> list[tuple[int | None, float]]:
        """``(step, value)`` of one metric in step order, for curves."""
        rows = self.conn.execute(
            "SELECT step, value FROM metrics WHERE job_id = ? AND name = ? ORDER BY step, id", (job_id, name)
        )
        return [(r[0], r[1]) for r in rows]

    @_guarded
    def artefacts(self, job_id: int) -> dict[str, str]:
        rows = self.conn.execute("SELECT name, path FROM artefacts WHERE job_id = ? ORDER BY name", (job_id,))
        return {r[0]: r[1] for r in rows}

    @_guarded
    def resource_samples(self, job_id: int, limit: int | None = None) -> list[dict[str, Any]]:
        """Resource samples of a job, oldest first (the last ``limit`` when given)."""
        sql = "SELECT t, cpu_percent, rss_bytes, gpu_mem_bytes, gpu_util, proc_gpu_mem_bytes FROM resource_samples WHERE job_id = ? ORDER BY t DESC"
        args: list[Any] = [job_id]
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        return [dict(r) for r in reversed(self.conn.execute(sql, args).fetchall())]

    @_guarded
    def count_case_predictions(self, job_id: int) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM case_predictions WHERE job_id = ?", (job_id,)).fetchone()[0])

    @_guarded
    def case_predictions(self, job_id: int) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT series_uid, probabilities, truth, seconds, error FROM case_predictions WHERE job_id = ? "
            "ORDER BY series_uid",
            (job_id,),
        )
        out = []
        for r in rows:
            item = dict(r)
            item["probabilities"] = json.loads(item["probabilities"])
            item["truth"] = json.loads(item["truth"]) if item["truth"] else None
            out.append(item)
        return out


def _create_empty(path: Path) -> None:
    """Create a new database file as 0666 under the umask (SQLite would use 0644).

    An empty file is an empty database; the ``-wal`` / ``-shm`` files SQLite adds copy its mode,
    so the workspace's permission policy (see :mod:`rsna_tui.workspace`) covers all three.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        pass
    except OSError:
        pass  # a read-only folder: SQLite's own open says so, naming the file


def _create_statements() -> list[str]:
    """DDL of the newest schema, compiled from the SQLModel classes (imported only here)."""
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    from rsna_tui.jobs import models

    if models.SCHEMA_VERSION != SCHEMA_VERSION:
        raise SchemaError(f"models describe schema {models.SCHEMA_VERSION}, the store writes {SCHEMA_VERSION}")
    dialect = sqlite.dialect()
    statements = []
    for table in models.TABLES:
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        statements.extend(str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes)
    return statements
