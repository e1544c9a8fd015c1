"""The app's refresh: fold events, notice vanished processes, start queued jobs, read what changed.

:class:`Poller` is plain Python (no Textual), run by the app in one thread worker, so that a slow
or failing read never blocks input; it owns the only :class:`JobManager` of that thread (SQLite
connections are per thread). It makes the app a full manager: events are folded, lost processes
marked and ready queued jobs started exactly as the CLI and the detached scheduler do, through
``JobManager.refresh()`` / ``schedule()``.

Reading only what changed: ``PRAGMA data_version`` moves when another connection committed, and
the connection's ``total_changes`` when this one did (its own folds); when neither moved, a cycle
runs no query beyond the fold checks (one ``stat`` per active job). When something moved, only
rows that can have changed are read: jobs newer than the newest known one, and jobs that were
active at the previous look or are active now (a terminal job does not change).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsna_tui.jobs.manager import JobManager
from rsna_tui.jobs.store import ACTIVE, TERMINAL, Store
from rsna_tui.workspace import Workspace

#: Seconds between two poll cycles (the worker waits this long after a cycle ends).
POLL_INTERVAL_S = 1.0
#: The first cycle reads this many of the newest jobs; the older ones come with the next cycle.
FIRST_ROWS = 500

_COLUMNS = (
    "id, stage, profile, status, attempt, progress, created_at, started_at, finished_at, message, error, "
    "backend, native_id, json_extract(params, '$.dataset') AS dataset"
)


@dataclass(frozen=True)
class JobLine:
    """One job as the job table shows it (no parameters: a table of 10,000 jobs stays light)."""

    id: int
    stage: str
    profile: str
    status: str
    attempt: int
    progress: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    message: str
    error: str | None
    backend: str
    native_id: str | None
    dataset: str
    #: GPU memory of the job's own processes at its latest resource sample (None: no sample / no GPU).
    gpu_mem: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def open_store(workspace: Workspace, db_path: Path, readonly: bool) -> Store:
    """The store of this thread: read-only for ``--db``, else the workspace's (created if needed)."""
    if readonly:
        return Store(db_path, readonly=True)
    workspace.ensure_root()
    return Store(db_path)


class Poller:
    """One refresh cycle at a time; keeps what it saw last, to report only differences."""

    def __init__(self, workspace: Workspace, db_path: Path, readonly: bool) -> None:
        self.workspace = workspace
        self.db_path = db_path
        self.readonly = readonly
        self._manager: JobManager | None = None
        self._version: tuple[int, int] | None = None
        self._known: dict[int, JobLine] = {}
        self._active: set[int] = set()
        self._max_id = 0
        #: After the first cycle: read the jobs older than this id in the next one.
        self._backlog: int | None = None

    @property
    def manager(self) -> JobManager:
        """Opened on first use, in the thread that polls."""
        if self._manager is None:
            self._manager = JobManager(self.workspace, open_store(self.workspace, self.db_path, self.readonly))
        return self._manager

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def poll(self) -> tuple[list[JobLine], list[JobLine], bool]:
        """One cycle: ``(changed rows, rows that just ended, full)``; ``full`` on the first call."""
        manager = self.manager
        if not self.readonly:
            manager.refresh()
            manager.schedule()
        conn = manager.store.conn
        version = (int(conn.execute("PRAGMA data_version").fetchone()[0]), conn.total_changes)
        full = self._version is None
        if version == self._version and self._backlog is None:
            return [], [], False
        self._version = version
        if full:  # the newest first, so that the table paints at once; the rest next cycle
            rows = self._read(" ORDER BY id DESC LIMIT ?", (FIRST_ROWS,))[::-1]
            self._backlog = rows[0].id if len(rows) == FIRST_ROWS else None
        else:
            ids = sorted(self._active)
            marks = ", ".join("?" for _ in ids)
            where = " WHERE id > ? OR status IN (?, ?, ?)" + (f" OR id IN ({marks})" if ids else "")
            rows = self._read(where + " ORDER BY id", (self._max_id, *ACTIVE, *ids))
            if self._backlog is not None:
                rows = self._read(" WHERE id < ? ORDER BY id", (self._backlog,)) + rows
                self._backlog = None
        changed, ended = [], []
        for line in rows:
            old = self._known.get(line.id)
            self._max_id = max(self._max_id, line.id)
            if old == line:
                continue
            changed.append(line)
            if old is not None and not old.terminal and line.terminal:
                ended.append(line)
            self._known[line.id] = line
            if line.terminal:
                self._active.discard(line.id)
            else:
                self._active.add(line.id)
        return changed, ended, full

    def _read(self, where: str, args: tuple[Any, ...]) -> list[JobLine]:
        conn = self.manager.store.conn
        rows = conn.execute(f"SELECT {_COLUMNS} FROM jobs{where}", args).fetchall()
        if not rows:
            return []
        gpu = self._gpu_memory([r[0] for r in rows])
        return [
            JobLine(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], (r[9] or "").split("\n", 1)[0], r[10], r[11],
                r[12], r[13] if isinstance(r[13], str) else "", gpu.get(r[0]),
            )
            for r in rows
        ]

    def _gpu_memory(self, ids: list[int]) -> dict[int, int]:
        """Latest ``proc_gpu_mem_bytes`` per job of ``ids``."""
        conn = self.manager.store.conn
        if len(ids) > 900:  # SQLite's limit on variables; one pass over the samples instead
            inner, args = "SELECT MAX(id) FROM resource_samples WHERE job_id BETWEEN ? AND ? GROUP BY job_id", (min(ids), max(ids))
        else:
            marks = ", ".join("?" for _ in ids)
            inner, args = f"SELECT MAX(id) FROM resource_samples WHERE job_id IN ({marks}) GROUP BY job_id", tuple(ids)
        rows = conn.execute(
            f"SELECT job_id, proc_gpu_mem_bytes FROM resource_samples WHERE id IN ({inner})", args
        ).fetchall()
        return {r[0]: r[1] for r in rows if r[1] is not None}

    def leave(self) -> int:
        """When the app closes: hand queued jobs to the detached scheduler; returns how many wait."""
        if self.readonly:
            return 0
        waiting = self.manager.schedule()
        if waiting:
            self.manager.ensure_scheduler()
        return waiting


def timed_poll(poller: Poller) -> tuple[list[JobLine], list[JobLine], bool, float]:
    start = time.perf_counter()
    changed, ended, full = poller.poll()
    return changed, ended, full, time.perf_counter() - start


#: The first read of a log shows at most its last this many bytes (the pager has the rest).
LOG_FIRST_BYTES = 256 * 1024


class DetailReader:
    """What one job produced since the previous read: metric points, resource samples, log text.

    Reads by row id and byte offset, so each call costs only the new rows; lineage and artefacts
    are read again only when the job's record changed.
    """

    def __init__(self, workspace: Workspace, db_path: Path, readonly: bool, job_id: int) -> None:
        self.workspace = workspace
        self.job_id = job_id
        self.store = open_store(workspace, db_path, readonly)
        self._metric_id = 0
        self._sample_id = 0
        self._log_offset: int | None = None
        self._job: Any = None

    def close(self) -> None:
        self.store.close()

    def read(self) -> Any:
        from rsna_tui.app.messages import DetailData
        from rsna_tui.jobs.events import LOG

        job = self.store.get_job(self.job_id)
        if job is None:
            raise LookupError(f"no job {self.job_id} in {self.store.path}")
        data = DetailData(job=job, full=self._job is None)
        conn = self.store.conn
        # ORDER BY the indexed columns: "ORDER BY id" would make SQLite walk the whole table by rowid
        for row in conn.execute(
            "SELECT id, name, step, value, t FROM metrics WHERE job_id = ? AND id > ? ORDER BY name, step, id",
            (self.job_id, self._metric_id),
        ):
            self._metric_id = max(self._metric_id, row[0])
            data.points.setdefault(row[1], []).append((row[2], row[3], row[4]))
        for row in conn.execute(
            "SELECT id, t, cpu_percent, rss_bytes, gpu_mem_bytes, gpu_util, proc_gpu_mem_bytes FROM resource_samples "
            "WHERE job_id = ? AND id > ? ORDER BY t, id", (self.job_id, self._sample_id),
        ):
            self._sample_id = max(self._sample_id, row[0])
            data.samples.append(dict(row))
        data.log = self._read_log(self.workspace.job_dir(self.job_id) / LOG)
        if job != self._job:
            data.artefacts = self.store.artefacts(self.job_id)
            data.lineage = self._lineage(job)
        self._job = job
        return data

    def _read_log(self, path: Path) -> str:
        try:
            with path.open("rb") as handle:
                if self._log_offset is None:
                    size = handle.seek(0, 2)
                    self._log_offset = max(0, size - LOG_FIRST_BYTES)
                handle.seek(self._log_offset)
                data = handle.read()
        except FileNotFoundError:
            return ""
        self._log_offset += len(data)
        return data.decode(errors="replace")

    def _lineage(self, job: Any) -> dict[str, list[Any]]:
        """Attempts (the chain of retries / resumes), ``--after`` jobs, dependants and users."""
        from rsna_tui.jobs.store import JOB_SELECT, JobRow

        conn = self.store.conn
        root = job
        while root.parent_id is not None:
            parent = self.store.get_job(root.parent_id)
            if parent is None:
                break
            root = parent
        attempts, frontier = [root], [root.id]
        while frontier:
            marks = ", ".join("?" for _ in frontier)
            children = [JobRow.from_row(r) for r in conn.execute(JOB_SELECT + f" WHERE parent_id IN ({marks}) ORDER BY id", frontier)]
            attempts.extend(children)
            frontier = [c.id for c in children]
        after = [j for j in (self.store.get_job(i) for i in job.depends_on) if j is not None]
        dependants = [JobRow.from_row(r) for r in conn.execute(
            JOB_SELECT + " WHERE EXISTS (SELECT 1 FROM json_each(jobs.depends_on) WHERE value = ?) ORDER BY id", (job.id,)
        )]
        used: list[Any] = []
        paths = list(self.store.artefacts(job.id).values())
        if paths:
            clauses = " OR ".join("instr(params, ?) > 0" for _ in paths)
            for r in conn.execute(JOB_SELECT + f" WHERE id != ? AND ({clauses}) ORDER BY id", (job.id, *paths)):
                user = JobRow.from_row(r)
                hits = [k for k, v in user.params.items() if isinstance(v, str) and any(p in v for p in paths)]
                used.append((user, ", ".join(hits) or "params"))
        return {"attempts": attempts, "after": after, "dependants": dependants, "used_by": used}
