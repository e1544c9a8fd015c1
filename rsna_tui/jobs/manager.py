"""The job manager: submit, queue, start, refresh, cancel, retry and resume jobs of one workspace.

Used by the CLI, the (later) TUI and the scheduler process alike; any of them may run at the same
time, coordinated through ``jobs.db`` transactions. Job states:

``queued`` -> ``starting`` (launched, runner not yet reporting) -> ``running`` -> ``succeeded`` /
``failed`` / ``cancelled``; ``lost`` when the process vanished without a ``finished`` event.
A job of a backend with a queue of its own (Slurm) reads ``queued`` while it waits there too: it has a
native id then, and only queued jobs without one are ours to launch.

A queued job starts when every ``--after`` dependency succeeded (a failed, cancelled or lost one
fails it, naming the dependency) and, for GPU-heavy stages, when a GPU slot is free. CPU-only
stages never wait for a slot.

Crashes (see :mod:`rsna_tui.jobs.recovery`): a job ``starting`` whose launcher died before it
started the runner is queued again; a job of another host is never marked ``lost`` by a manager
that cannot see its processes; a cancelled job whose process ended without ``finished`` is
``cancelled``. When a local job ends (finished or lost) its process group must be empty; whatever
is left is killed and the job's message says so.
"""
from __future__ import annotations

import fcntl
import functools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from engine.stages import ParameterError
from rsna_tui.jobs import recovery
from rsna_tui.jobs.arrays import launch_groups, start_group
from rsna_tui.jobs.chains import chainable, native_dependencies
from rsna_tui.jobs.config import load_config
from rsna_tui.jobs.events import LOG, SPEC, read_spec, tail, write_json_atomic
from rsna_tui.jobs.executor import Executor
from rsna_tui.jobs.fold import fold_job
from rsna_tui.jobs.gpus import gpu_slots, visible_devices
from rsna_tui.jobs.launches import record_launch, request_cancel
from rsna_tui.jobs.local import LocalExecutor
from rsna_tui.jobs.settle import settle_all
from rsna_tui.jobs.slurm import SlurmExecutor
from rsna_tui.jobs.stage_table import all_stages, find_stage
from rsna_tui.jobs.store import JOB_SELECT, TERMINAL, JobRow, Store, iso
from rsna_tui.workspace import Workspace

DEFAULT_GRACE_S = 10.0
LOST_LOG_LINES = 10


class JobError(RuntimeError):
    """A request about jobs that cannot be done (unknown job, retry of a running job, ...)."""


class JobManager:
    """Jobs of one workspace."""

    def __init__(self, workspace: Workspace, store: Store | None = None) -> None:
        self.workspace = workspace
        workspace.apply_umask()  # private files unless the workspace is shared (see workspace.py)
        self.store = store if store is not None else Store(workspace.db_path)
        self.config = load_config(workspace.root)
        self.executors: dict[str, Executor] = {"local": LocalExecutor(), "slurm": SlurmExecutor(workspace)}
        #: Where new jobs run: config.toml's ``backend``, or the CLI's ``--backend``.
        self.backend = self.config.backend

    def close(self) -> None:
        self.store.close()

    @functools.cached_property
    def gpu_devices(self) -> list[str]:
        """Devices GPU jobs are pinned to (asked once: NVML start-up is not free)."""
        return visible_devices()

    @functools.cached_property
    def gpu_slots(self) -> int:
        return gpu_slots()

    # -- looking jobs up ---------------------------------------------------------------------------

    def job(self, ref: int | str) -> JobRow:
        """A job by id; JobError when there is none."""
        try:
            job_id = int(ref)
        except (TypeError, ValueError):
            raise JobError(f"{ref!r} is not a job id (job ids are numbers, see `rsna-tui jobs`)") from None
        job = self.store.get_job(job_id)
        if job is None:
            raise JobError(f"no job {job_id} in {self.store.path}")
        return job

    def job_dir(self, job: JobRow | int) -> Path:
        return self.workspace.job_dir(job.id if isinstance(job, JobRow) else job)

    # -- submitting ---------------------------------------------------------------------------------

    def submit(
        self,
        stage: str,
        profile: str = "tiny",
        overrides: dict[str, Any] | list[str] | None = None,
        after: Iterable[int | str] = (),
        *,
        params: dict[str, Any] | None = None,
        function: str | None = None,
        gpu: bool | None = None,
        resume: bool = False,
        parent: int | None = None,
        attempt: int = 1,
        cwd: Path | None = None,
        start: bool = True,
        fingerprint: str | None = None,
        backend: str | None = None,
        shard: int | None = None,
        array: str | None = None,
        expand: bool = True,
    ) -> JobRow:
        """Queue a job (parameters = profile + overrides, checked) and start it when it can.

        Raises ParameterError for an unknown stage or a bad override, JobError for an unknown
        ``after`` job. With ``start`` the job starts at once when ready, and when it has to wait
        the detached scheduler starts it later; ``start=False`` only records it (queued) for
        whoever calls :meth:`schedule` next. ``fingerprint`` is the planner's (``jobs.planner``).

        A shardable stage with ``shards`` > 1 becomes that many shard jobs (one array on Slurm) and
        a final step after them, which is returned (see :mod:`rsna_tui.jobs.arrays`); ``shard``
        and ``array`` are set by that expansion.
        """
        if params is None or function is None or gpu is None:
            definition = find_stage(stage)
            params = definition.resolve(profile, overrides) if params is None else params
            function = function or definition.function
            gpu = definition.gpu if gpu is None else gpu
            if expand and definition.shardable and int(params.get("shards", 1)) > 1:
                from rsna_tui.jobs.arrays import submit_sharded

                return submit_sharded(self, stage, profile, params, after, cwd=cwd, backend=backend, start=start,
                                      fingerprint=fingerprint)
        depends = [self.job(ref).id for ref in after]
        job = JobRow(
            id=0, stage=stage, profile=profile, params=params, status="queued", created_at=time.time(),
            function=function, backend=backend or self.backend, gpu=gpu, resume=resume, parent_id=parent,
            attempt=attempt, depends_on=depends, fingerprint=fingerprint,
        )
        with self.store.write():  # the spec exists before any scheduler can see the row
            self.store.insert_job(job)
            job_dir = self.workspace.ensure_job_dir(job.id)
            write_json_atomic(job_dir / SPEC, {
                "id": job.id, "stage": stage, "profile": profile, "params": params, "function": function,
                "created": iso(job.created_at), "resume": resume, "attempt": attempt, "parent": parent,
                "depends_on": depends, "gpu": gpu, "workspace": str(self.workspace.root),
                "cwd": str(cwd or Path.cwd()), "backend": job.backend, "shard": shard, "array": array,
            })
        if start:  # a chaining backend needs fresh dependencies only; local GPU slots need every job
            self.refresh(depends if self.executors[job.backend].chains else None)
            self.schedule_and_watch(job.backend)
        return self.store.get_job(job.id) or job

    def schedule_and_watch(self, backend: str) -> None:
        """Start what is ready; the detached scheduler takes what waits, and watches backend jobs
        (Slurm) so that a time limit or node failure is followed by the next attempt unattended."""
        if self.schedule() or self.executors[backend].chains:
            self.ensure_scheduler()

    def retry(self, ref: int | str) -> JobRow:
        """Run a finished job again with the same parameters, as its next attempt."""
        return self._again(self.job(ref), resume=False)

    def resume(self, ref: int | str) -> JobRow:
        """A new attempt that continues from the job's checkpoint (training stages)."""
        old = self.job(ref)
        definition = all_stages().get(old.stage)
        if definition is not None and not definition.resumable:
            raise ParameterError(f"stage {old.stage} cannot resume (no checkpoint); use `rsna-tui retry {old.id}`")
        return self._again(old, resume=True)

    def _again(self, old: JobRow, resume: bool) -> JobRow:
        self.refresh([old.id])
        old = self.job(old.id)
        if not old.terminal:
            raise JobError(f"job {old.id} is {old.status}; cancel it first or wait for it to end")
        spec = self._spec(old)
        return self.submit(
            old.stage, old.profile, params=old.params, function=old.function, gpu=old.gpu, resume=resume,
            parent=old.id, attempt=old.attempt + 1, cwd=Path(spec["cwd"]) if spec.get("cwd") else None,
            fingerprint=old.fingerprint,  # the same parameters and inputs: the planner may reuse it
            backend=old.backend, shard=spec.get("shard"), expand=False,
        )

    def _spec(self, job: JobRow) -> dict[str, Any]:
        try:
            return read_spec(self.job_dir(job))
        except (OSError, ValueError):
            return {}

    # -- keeping the database in step with the processes ------------------------------------------

    def refresh(self, job_ids: Iterable[int] | None = None) -> None:
        """Fold new events of active jobs and mark those whose process vanished as ``lost``.

        Jobs of a queue backend (Slurm) are asked about in one call per backend (``settle_all``), one
        its fold just ended ``cancelled`` too: that SIGTERM may have been a time limit.
        """
        if job_ids is None:
            jobs = self.store.active_jobs()
        else:
            jobs = [j for j in (self.store.get_job(i) for i in job_ids) if j is not None and not j.terminal]
        requeued = False
        queued_elsewhere: list[JobRow] = []
        for job in jobs:
            if job.status == "queued" and not job.native_id:
                continue
            fold_job(self.store, job.id, self.job_dir(job))
            current = self.store.get_job(job.id)
            if current is None:
                continue
            if self.executors[current.backend].chains and current.native_id:
                if not current.terminal or current.status == "cancelled":
                    queued_elsewhere.append(current)
                continue
            if not current.terminal:
                requeued |= self._check_alive(current)
                current = self.store.get_job(job.id)
            if current is not None and current.terminal:
                recovery.sweep(self, current)
        settle_all(self, queued_elsewhere)
        if requeued and self.schedule():
            self.ensure_scheduler()

    def _check_alive(self, job: JobRow) -> bool:
        """Mark a job whose process vanished ``lost``; True when a crashed launch was queued again."""
        if not job.native_id:
            if not recovery.adopt(self, job):
                return recovery.check_launch(self, job)
            job = self.job(job.id)  # with the adopted runner's pid
        alive = self.executors[job.backend].is_alive(job)
        if alive is not False:
            return False
        fold_job(self.store, job.id, self.job_dir(job))  # it may have finished just now
        current = self.store.get_job(job.id)
        if current is None or current.terminal or recovery.adopt(self, current, replace=True):
            return False
        log_tail = tail(self.job_dir(job) / LOG, LOST_LOG_LINES)
        reason = f"process {job.native_id} on {job.host} ended without a finished event"
        recovery.vanished(self, job, reason + (f"; last log lines:\n{log_tail}" if log_tail else "; log is empty"))
        return False

    def _finish(self, job_id: int, status: str, error: str, only_if: tuple[str, ...] | None = None) -> bool:
        """Set a terminal status unless the job already has one (or is not in ``only_if``)."""
        allowed = only_if or ("queued", "starting", "running")
        marks = ", ".join("?" for _ in allowed)
        with self.store.write() as conn:
            cursor = conn.execute(
                f"UPDATE jobs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status IN ({marks})",
                (status, error, time.time(), job_id, *allowed),
            )
        return cursor.rowcount > 0

    # -- queue ---------------------------------------------------------------------------------------

    def schedule(self) -> int:
        """Start every queued job that is ready; returns how many stay queued.

        A Slurm job is ready once each dependency succeeded or was handed to Slurm (``afterok``): a
        chain is submitted at once (see :mod:`rsna_tui.jobs.chains`); it takes no GPU slot of ours.
        """
        if not self.waiting_to_launch():
            return 0  # the common case, without taking the write lock
        slots = self.gpu_slots
        to_launch: list[JobRow] = []
        with self.store.write() as conn:
            queued = [JobRow.from_row(r) for r in conn.execute(JOB_SELECT + f" WHERE {_UNLAUNCHED} ORDER BY id")]
            if not queued:
                return 0
            busy = {
                r[0] for r in conn.execute(
                    "SELECT gpu_slot FROM jobs WHERE gpu = 1 AND status IN ('starting', 'running') AND gpu_slot IS NOT NULL"
                )
            }
            statuses: dict[int, tuple[str, str | None]] = {}
            waiting = 0
            picked: set[int] = set()
            for job in queued:
                verdict = self._dependencies(conn, job, statuses)
                if verdict == "wait":
                    if not chainable(self, conn, job, picked):
                        waiting += 1
                        continue
                elif verdict is not None:
                    conn.execute(
                        "UPDATE jobs SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
                        (verdict, time.time(), job.id),
                    )
                    statuses[job.id] = ("failed", verdict)
                    continue
                if job.gpu and not self.executors[job.backend].chains:  # a cluster allocates its own GPUs
                    free = next((s for s in range(slots) if s not in busy), None)
                    if free is None:
                        waiting += 1
                        continue
                    busy.add(free)
                    job.gpu_slot = free
                try:
                    record_launch(self.job_dir(job))  # in the transaction: a starting job always has one
                except OSError as exc:  # its folder is gone or the disk is full: this job only fails
                    error = f"could not start: {type(exc).__name__}: {exc}"
                    conn.execute("UPDATE jobs SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
                                 (error, time.time(), job.id))
                    statuses[job.id] = ("failed", error)
                    busy.discard(job.gpu_slot)
                    continue
                job.status, job.started_at = "starting", time.time()
                conn.execute(
                    "UPDATE jobs SET status = 'starting', gpu_slot = ?, started_at = ? WHERE id = ?",
                    (job.gpu_slot, job.started_at, job.id),
                )
                statuses[job.id] = ("starting", None)
                picked.add(job.id)
                to_launch.append(job)
        for group in launch_groups(self, to_launch):  # in id order: a dependency is submitted first
            self._launch(group)
        return waiting

    def waiting_to_launch(self) -> bool:
        """Whether some queued job still has to be launched by us (not merely queued in its backend)."""
        return self.store.conn.execute(f"SELECT 1 FROM jobs WHERE {_UNLAUNCHED} LIMIT 1").fetchone() is not None

    @staticmethod
    def _dependencies(conn: Any, job: JobRow, statuses: dict[int, tuple[str, str | None]]) -> str | None:
        """None when all dependencies succeeded, "wait" while some run, else the failure reason."""
        pending = False
        for dep in job.depends_on:
            if dep not in statuses:
                row = conn.execute("SELECT status, error FROM jobs WHERE id = ?", (dep,)).fetchone()
                statuses[dep] = (row[0], row[1]) if row else ("missing", None)
            status, error = statuses[dep]
            if status == "missing":
                return f"dependency {dep} does not exist"
            if status in TERMINAL and status != "succeeded":
                return f"dependency {dep} {status}" + (f": {error}" if error else "")
            if status != "succeeded":
                pending = True
        return "wait" if pending else None

    def _launch(self, group: list[JobRow]) -> None:
        """Start one job, or several jobs of one array together (their backend has arrays)."""
        job = group[0]
        job_dir = self.job_dir(job)
        try:
            spec = read_spec(job_dir)
            env = self.workspace.job_environment()
            devices = self.gpu_devices
            if job.gpu and job.gpu_slot is not None and job.gpu_slot < len(devices):
                env["CUDA_VISIBLE_DEVICES"] = devices[job.gpu_slot]
            self.workspace.ensure_nnunet_dirs()
            executor = self.executors[job.backend]
            after = native_dependencies(self, job) if executor.chains else None
            launches = start_group(executor, [self.job_dir(j) for j in group], env, Path(spec.get("cwd") or job_dir), after)
        except Exception as exc:
            for member in group:
                self._finish(member.id, "failed", f"could not start: {type(exc).__name__}: {exc}")
            return
        with self.store.write() as conn:  # unless a probe adopted its runner meanwhile
            for member, launched in zip(group, launches):
                queued = ", status = 'queued', started_at = NULL" if launched.queued else ""  # in the backend's queue
                conn.execute(
                    f"UPDATE jobs SET native_id = ?, host = ?, proc_create_time = ?{queued} WHERE id = ? AND native_id IS NULL",
                    (launched.native_id, launched.host, launched.create_time, member.id),
                )

    def ensure_scheduler(self) -> None:
        """Start the detached scheduler process unless one holds the workspace's lock already."""
        if _lock_held(self.workspace.scheduler_lock):
            return
        with self.workspace.scheduler_log.open("ab") as log:
            subprocess.Popen(
                [sys.executable, "-m", "rsna_tui.jobs.scheduler", str(self.workspace.root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True,
            )

    # -- cancelling ---------------------------------------------------------------------------------

    def cancel(self, ref: int | str, grace: float = DEFAULT_GRACE_S) -> JobRow:
        """Cancel a job: a queued one never starts; a running one gets SIGTERM, then SIGKILL."""
        job = self.job(ref)
        with self.store.write() as conn:  # not yet launched: it never starts
            unlaunched = conn.execute(
                f"UPDATE jobs SET status = 'cancelled', error = 'cancelled before it started', finished_at = ? "
                f"WHERE id = ? AND {_UNLAUNCHED}", (time.time(), job.id),
            ).rowcount > 0
        if unlaunched:
            return self.job(job.id)
        deadline = time.monotonic() + 5.0
        while job.status == "starting" and not job.native_id and time.monotonic() < deadline:
            time.sleep(0.05)  # its launcher is between picking it and starting the process
            job = self.job(job.id)
        if job.terminal:
            return job
        request_cancel(self.job_dir(job), grace)  # whoever sees the process end first says cancelled, not lost
        stopped = self.executors[job.backend].cancel(job, grace)
        fold_job(self.store, job.id, self.job_dir(job))
        reason = "cancelled; killed after the grace period" if stopped else "cancel requested; processes may remain"
        self._finish(job.id, "cancelled", reason)
        if self.schedule():  # dependants fail now, a queued GPU job may take the slot
            self.ensure_scheduler()
        return self.job(job.id)


#: Queued jobs that are ours to launch (a job queued in its backend has a native id).
_UNLAUNCHED = "status = 'queued' AND native_id IS NULL"


def _lock_held(path: Path) -> bool:
    """Whether another process holds the flock on ``path`` (we take it and drop it at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
