"""The tables of ``jobs.db``, as SQLModel classes: the definition of the newest schema.

A new database is created from these classes (see :mod:`rsna_tui.jobs.store`); an older one is
brought to the same shape by the ordered SQL migrations there, and a test checks that both paths
give the same tables, columns and indexes. The classes also serve ORM readers (the TUI, notebooks:
``Session(store.sqlalchemy_engine())``). The CLI's hot paths query with :mod:`sqlite3` directly
because importing SQLAlchemy alone costs about a third of a second per command.

Times are unix seconds (REAL) so that raw SQL and the ORM read the same values.
"""
from __future__ import annotations

from typing import Optional

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

#: The schema version these classes describe; see ``store.MIGRATIONS`` for the history.
SCHEMA_VERSION = 3


class SchemaVersion(SQLModel, table=True):
    """One row: the schema version the database was last written with."""

    __tablename__ = "schema_version"
    id: int = Field(default=1, primary_key=True)
    version: int


class Job(SQLModel, table=True):
    """One run of one stage (an attempt); retries and resumes are new rows linked by ``parent_id``."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_stage_created", "stage", "created_at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    stage: str
    profile: str
    #: JSON object of the resolved parameter values.
    params: str
    #: ``module:function`` when the job runs a function outside the stage table (test stages).
    function: Optional[str] = None
    #: queued, starting, running, succeeded, failed, cancelled, lost.
    status: str = Field(index=True)
    backend: str = "local"
    #: Backend's id of the job: the runner's pid (= process group id) for the local backend.
    native_id: Optional[str] = None
    host: Optional[str] = None
    #: Start time of the runner process, to tell a reused pid from ours.
    proc_create_time: Optional[float] = None
    attempt: int = 1
    #: The job this one retries or resumes.
    parent_id: Optional[int] = Field(default=None, index=True)
    #: JSON list of job ids that must succeed first (``--after``).
    depends_on: str = "[]"
    gpu: bool = False
    #: Index of the GPU slot a GPU-heavy job holds while starting / running.
    gpu_slot: Optional[int] = None
    resume: bool = False
    created_at: float = Field(index=True)
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    exit_code: Optional[int] = None
    error: Optional[str] = None
    #: Bytes of ``events.jsonl`` already folded into this database.
    events_offset: int = 0
    #: Fraction done from the last progress event (None: unknown).
    progress: Optional[float] = None
    #: The last progress message or log line, for job lists.
    message: Optional[str] = None
    #: The planner's hash of the parameters and of the upstream jobs' fingerprints (None: not planned).
    fingerprint: Optional[str] = Field(default=None, index=True)


class Metric(SQLModel, table=True):
    """One scalar a stage reported (``train_loss`` at epoch 3)."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_job_name_step", "job_id", "name", "step"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id")
    step: Optional[int] = None
    name: str
    value: float
    t: float


class ResourceSample(SQLModel, table=True):
    """CPU / memory (and GPU, when there is one) of a job's process tree at one time."""

    __tablename__ = "resource_samples"
    __table_args__ = (Index("ix_resource_samples_job_t", "job_id", "t"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id")
    t: float
    cpu_percent: float
    rss_bytes: int
    #: Memory used on the job's devices (whole device) and their mean utilisation, in percent.
    gpu_mem_bytes: Optional[int] = None
    gpu_util: Optional[float] = None
    #: GPU memory held by the processes of the job's tree.
    proc_gpu_mem_bytes: Optional[int] = None


class Artefact(SQLModel, table=True):
    """An output a job registered under a stable name (``model``, ``predictions``)."""

    __tablename__ = "artefacts"

    job_id: int = Field(foreign_key="jobs.id", primary_key=True)
    name: str = Field(primary_key=True)
    path: str
    t: float


class CasePrediction(SQLModel, table=True):
    """One series' 14 probabilities from a job's ``predictions`` CSV, and its truth when known."""

    __tablename__ = "case_predictions"
    __table_args__ = (UniqueConstraint("job_id", "series_uid", name="uq_case_predictions_job_series"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id")
    series_uid: str
    #: JSON list of the 14 probabilities in ``engine.labels.LABEL_COLUMNS`` order.
    probabilities: str
    #: The last of them (``Aneurysm Present``), a column of its own for sorting.
    aneurysm_present: float
    #: JSON list of the 14 truth labels, or None.
    truth: Optional[str] = None
    seconds: Optional[float] = None
    error: Optional[str] = None


#: Our tables in creation order (jobs before the tables that refer to it).
TABLES = tuple(m.__table__ for m in (SchemaVersion, Job, Metric, ResourceSample, Artefact, CasePrediction))
