"""``rsna-tui doctor``: check a workspace, and with ``--repair`` fix what is safe to fix.

Without ``--repair`` nothing is changed: each finding says what a repair would do. The job
folders are the source of truth (``spec.json`` says what a job is, ``events.jsonl`` what it did);
``jobs.db`` is an index of them that can always be rebuilt. Checks, in order:

- **database**: it opens, its schema is known, ``PRAGMA quick_check`` passes. A damaged one is
  rebuilt: the file (with its ``-wal`` / ``-shm``) is renamed ``jobs.db.damaged-<time>``, never
  deleted, and a new database gets one row per job folder, its events folded from the start
  (status, metrics, resources, artefacts, predictions). A folder without events is marked
  ``lost`` (it may have been cancelled while queued: a job is never run on a guess); one whose
  runner may still run keeps ``running`` and its pid, and the next refresh checks the process.
- **folders**: a job folder without a row is adopted the same way when it has events (an
  interrupted submit, spec only, is reported); an active row without its folder is marked
  ``lost``; ended rows without folders (deleted to save space) are only counted.
- **launches**: ``starting`` jobs whose launcher died before starting the runner are queued
  again (the rule every refresh applies; see :mod:`rsna_tui.jobs.launches`).
- **scheduler**: queued jobs but no scheduler holding ``scheduler.lock`` -> one is started. (An
  flock is released when its holder dies, so a lock held with no such process here means a
  scheduler on another host or a stale network-file-system lock: reported, not removed.)
- **processes**: processes still running in the process group of an ended job -> killed.
- **permissions**: a workspace root that others may enter -> closed to them (and to the group
  unless the workspace policy lets it in; see :mod:`rsna_tui.workspace`).
- **disk**: free space of the workspace's file system (warning under 1 GiB, problem under 100 MiB).
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from rsna_tui.jobs.events import EVENTS, read_complete, read_spec
from rsna_tui.jobs.fold import fold_job
from rsna_tui.jobs.launches import launcher_alive, lock_holder, read_launch
from rsna_tui.jobs.local import group_is_ours
from rsna_tui.jobs.manager import JobManager, _lock_held
from rsna_tui.jobs.procgroup import end_group
from rsna_tui.jobs.recovery import LAUNCH_TIMEOUT_S
from rsna_tui.jobs.store import ACTIVE, TERMINAL, JobRow, Store, StoreError
from rsna_tui.jobs.store_errors import on_read_only_fs
from rsna_tui.workspace import Workspace

LOW_DISK_BYTES = 2**30
FULL_DISK_BYTES = 100 * 2**20
LEVELS = ("ok", "warning", "problem")


@dataclass
class Finding:
    """One result: ``repair`` says what ``--repair`` does (``repaired``: it did)."""

    check: str
    level: str
    message: str
    repair: str = ""
    repaired: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def examine(workspace: Workspace, repair: bool = False) -> list[Finding]:
    """All findings for ``workspace``; with ``repair`` the safe repairs are done on the way."""
    doctor = _Doctor(workspace, repair)
    doctor.run()
    return doctor.findings


class _Doctor:
    def __init__(self, workspace: Workspace, repair: bool) -> None:
        self.workspace = workspace
        self.repair = repair
        self.findings: list[Finding] = []

    def add(self, check: str, level: str, message: str, repair: str = "", repaired: bool = False) -> None:
        self.findings.append(Finding(check, level, message, repair, repaired))

    def run(self) -> None:
        if not self.workspace.root.is_dir():
            self.add("workspace", "problem", f"{self.workspace.root} does not exist")
            return
        store = self._database()
        if store is not None:
            manager = JobManager(self.workspace, store)
            try:
                self._folders(store, manager)
                self._launches(store, manager)
                self._scheduler(store, manager)
                self._leftovers(store)
                if self.repair:
                    manager.refresh()  # fold what is new, notice vanished processes
            finally:
                manager.close()
        self._permissions()
        self._disk()

    # -- database ------------------------------------------------------------------------------

    def _database(self) -> Store | None:
        db = self.workspace.db_path
        folders = job_folders(self.workspace)
        if not db.exists():
            if folders:
                return self._rebuild(f"{db} is missing but {len(folders)} job folders exist")
            self.add("database", "ok", f"{db} does not exist yet (a new workspace)")
            return None
        try:
            store = Store(db)
        except StoreError as exc:
            if exc.kind != "damaged":
                self.add("database", "problem", str(exc))
                return None
            return self._rebuild(f"{db} is damaged ({exc.__cause__ or exc})")
        try:
            result = [r[0] for r in store.conn.execute("PRAGMA quick_check")]
        except Exception as exc:  # sqlite3.DatabaseError on a damaged page
            result = [str(exc)]
        if result != ["ok"]:
            store.close()
            return self._rebuild(f"{db} fails its integrity check ({'; '.join(result[:3])})")
        self.add("database", "ok", f"{db}: integrity ok, {store.count_jobs()} jobs")
        return store

    def _rebuild(self, problem: str) -> Store | None:
        folders = job_folders(self.workspace)
        plan = f"set the file aside as jobs.db.damaged-<time> and rebuild it from {len(folders)} job folders"
        if not self.repair:
            self.add("database", "problem", problem, plan)
            return None
        if _lock_held(self.workspace.scheduler_lock):
            self.add("database", "problem", problem, "stop the scheduler first (see `rsna-tui doctor` above)")
            return None
        aside, notes = rebuild(self.workspace)
        done = (f"kept the damaged file as {aside.name}; " if aside else "") + f"rebuilt {len(folders) - len(notes)} jobs from their folders"
        self.add("database", "problem", problem, done + "".join(f"; {n}" for n in notes), repaired=True)
        return Store(self.workspace.db_path)

    # -- folders and rows ------------------------------------------------------------------------

    def _folders(self, store: Store, manager: JobManager) -> None:
        folders = set(job_folders(self.workspace))
        rows = {int(r[0]): r[1] for r in store.conn.execute("SELECT id, status FROM jobs")}
        for job_id in sorted(folders - rows.keys()):
            job_dir = self.workspace.job_dir(job_id)
            if not _has_events(job_dir):
                self.add("folders", "warning", f"job folder {job_dir} has no row and never ran (an interrupted submit)")
                continue
            message = f"job folder {job_dir} has events but no row in the database"
            if self.repair:
                note = import_folder(store, self.workspace, job_id)
                self.add("folders", "problem", message, note or f"added job {job_id} from its folder", repaired=True)
            else:
                self.add("folders", "problem", message, f"add job {job_id} from its spec.json and events.jsonl")
        missing = sorted(i for i in rows.keys() - folders)
        for job_id in (i for i in missing if rows[i] in ACTIVE):
            message = f"job {job_id} is {rows[job_id]} but its folder {self.workspace.job_dir(job_id)} is missing"
            repaired = self.repair and manager._finish(job_id, "lost", "its job folder is missing (rsna-tui doctor)")
            self.add("folders", "problem", message, "mark it lost", repaired=bool(repaired))
        ended = [i for i in missing if rows[i] in TERMINAL]
        if ended:
            self.add("folders", "ok", f"{len(ended)} ended jobs have no folder any more (deleted to save space?)")
        if not (folders ^ rows.keys()):
            self.add("folders", "ok", f"{len(folders)} job folders, one row each")

    def _launches(self, store: Store, manager: JobManager) -> None:
        starting = store.list_jobs(status="starting")
        crashed, waiting = [], []
        for job in starting:
            if job.native_id or lock_holder(manager.job_dir(job)):
                continue
            launch = read_launch(manager.job_dir(job))
            alive = launcher_alive(launch)
            if alive is False:
                crashed.append(job.id)
            elif alive and time.time() - float(launch.get("t") or 0) > LAUNCH_TIMEOUT_S:
                waiting.append(job.id)
        if crashed:
            message = f"jobs {_ids(crashed)} are starting but their launcher died before starting them"
            if self.repair:
                manager.refresh(crashed)
            self.add("launches", "problem", message, "queue them again", repaired=self.repair)
        if waiting:
            self.add("launches", "warning", f"jobs {_ids(waiting)} are starting for over {LAUNCH_TIMEOUT_S:.0f} s; their launcher still runs")
        if not crashed and not waiting:
            self.add("launches", "ok", f"{len(starting)} jobs starting, none stuck")

    def _scheduler(self, store: Store, manager: JobManager) -> None:
        queued = len(store.list_jobs(status="queued"))
        lock = self.workspace.scheduler_lock
        if _lock_held(lock):
            pid = lock.read_text().strip() if lock.exists() else ""
            if pid.isdigit() and psutil.pid_exists(int(pid)):
                self.add("scheduler", "ok", f"the scheduler runs (pid {pid}), {queued} jobs queued")
            else:  # flock is released when its holder dies; only a network file system keeps it
                self.add("scheduler", "warning", f"{lock} is held but its pid ({pid or 'none'}) does not run here: a "
                         "scheduler on another host, or a stale lock of a network file system (remove the file)")
        elif queued:
            message = f"{queued} jobs are queued but no scheduler runs (it was killed?)"
            if self.repair and manager.schedule():
                manager.ensure_scheduler()
            self.add("scheduler", "problem", message, "start the queued jobs that are ready and a scheduler for the rest",
                     repaired=self.repair)
        else:
            self.add("scheduler", "ok", "no scheduler needed: nothing is queued")

    def _leftovers(self, store: Store) -> None:
        groups = process_groups()
        host = socket.gethostname()
        found = []
        for job in store.list_jobs(status=list(TERMINAL)):
            if job.backend != "local" or job.host != host or not job.native_id or not job.native_id.isdigit():
                continue
            pgid = int(job.native_id)
            if pgid in groups and group_is_ours(pgid, job.proc_create_time):
                found.append((job, pgid, groups[pgid]))
        for job, pgid, pids in found:
            message = f"job {job.id} is {job.status} but {len(pids)} of its processes still run (pids {_ids(pids)})"
            if self.repair:
                end_group(pgid, 1.0)
                store.update_job(job.id, message=f"rsna-tui doctor killed {len(pids)} processes left running after it ended")
            self.add("processes", "problem", message, "kill them", repaired=self.repair)
        if not found:
            self.add("processes", "ok", "no process of an ended job is left")

    # -- the file system -----------------------------------------------------------------------------

    def _permissions(self) -> None:
        root = self.workspace.root
        mode = stat.S_IMODE(root.stat().st_mode)
        if mode & 0o007:
            wanted = mode & ~(self.workspace.umask() & 0o077)  # the group keeps what the policy gives it
            if self.repair:
                os.chmod(root, wanted)
            self.add("permissions", "problem", f"{root} is open to other users (mode {mode:o})", f"chmod {wanted:o} it",
                     repaired=self.repair)
        else:
            shared = self.workspace.shared_gid
            who = f"shared with group {shared}" if shared is not None else "private"
            self.add("permissions", "ok", f"{root} is {who} (mode {mode:o})")

    def _disk(self) -> None:
        if on_read_only_fs(self.workspace.root):
            self.add("disk", "problem", f"{self.workspace.root} is on a read-only file system: jobs cannot run there")
            return
        usage = shutil.disk_usage(self.workspace.root)
        text = f"{_size(usage.free)} free of {_size(usage.total)} on the workspace's file system"
        level = "problem" if usage.free < FULL_DISK_BYTES else "warning" if usage.free < LOW_DISK_BYTES else "ok"
        self.add("disk", level, text, "free some space (jobs fail with 'disk full')" if level != "ok" else "")


# -- rebuilding rows from job folders ---------------------------------------------------------------

def job_folders(workspace: Workspace) -> list[int]:
    """Ids of the job folders (``jobs/<number>/``), ascending."""
    try:
        names = os.listdir(workspace.layout.jobs)
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if n.isdigit() and (workspace.layout.jobs / n).is_dir())


def rebuild(workspace: Workspace) -> tuple[Path | None, list[str]]:
    """Set ``jobs.db`` aside (never deleted) and make a new one from the job folders.

    Returns the damaged file's new name and a note per folder that could not be read.
    """
    db = workspace.db_path
    aside = None
    if db.exists():
        aside = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{db}{suffix}").exists():
                os.replace(f"{db}{suffix}", f"{aside}{suffix}")
    notes = []
    with Store(db) as store:
        for job_id in job_folders(workspace):
            note = import_folder(store, workspace, job_id)
            if note:
                notes.append(note)
    return aside, notes


def import_folder(store: Store, workspace: Workspace, job_id: int) -> str | None:
    """Add the row of one job folder and fold its events; a note when the folder is unreadable."""
    job_dir = workspace.job_dir(job_id)
    try:
        spec = read_spec(job_dir)
        created = _unix(spec.get("created")) or job_dir.stat().st_mtime
        job = JobRow(
            id=job_id, stage=str(spec["stage"]), profile=str(spec.get("profile", "")), params=dict(spec.get("params") or {}),
            status="starting", created_at=created, function=spec.get("function"), backend=spec.get("backend", "local"),
            attempt=int(spec.get("attempt") or 1), parent_id=spec.get("parent"), depends_on=list(spec.get("depends_on") or []),
            gpu=bool(spec.get("gpu")), resume=bool(spec.get("resume")),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"skipped {job_dir}: unreadable spec.json ({exc})"
    store.insert_job(job, keep_id=True)
    fold_job(store, job_id, job_dir)
    row = store.get_job(job_id)
    if row is None or row.terminal:
        return None
    started = _started_event(job_dir)
    if started is None:
        store.update_job(
            job_id, status="lost", finished_at=time.time(),
            error=f"rebuilt by rsna-tui doctor: it never started (queued or cancelled before); `rsna-tui retry {job_id}` runs it",
        )
    else:
        store.update_job(
            job_id, native_id=str(started.get("pid")), host=started.get("host"), proc_create_time=started.get("create_time"),
            message="rebuilt by rsna-tui doctor; the next refresh checks whether its process still runs",
        )
    return None


def _started_event(job_dir: Path) -> dict[str, Any] | None:
    events, _, _ = read_complete(job_dir / EVENTS, 0, 65536)
    return next((e for e in events if e["type"] == "started"), None)


def _has_events(job_dir: Path) -> bool:
    try:
        return (job_dir / EVENTS).stat().st_size > 0
    except OSError:
        return False


def _unix(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp() if text else None
    except ValueError:
        return None


def process_groups() -> dict[int, list[int]]:
    """Live processes by process group, in one pass over the process table."""
    groups: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            groups.setdefault(os.getpgid(proc.pid), []).append(proc.pid)
        except OSError:
            continue
    return groups


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:10]))
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
