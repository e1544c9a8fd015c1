"""Several jobs of one stage submitted together: shards of a conversion, folds of a training.

Each task is a job of its own (its own row, folder, events and attempt history), so folding,
retries and the job list are unchanged. What differs is the launch: the tasks of one array share
an ``array`` token in their specs and, on a backend with arrays (Slurm), are submitted as one
``sbatch --array`` (one scheduler pass, one command); on the local backend they are simply jobs
that start as slots allow.

Sharding: a shardable stage (``convert``) with ``shards=N`` becomes N shard jobs (job k gets
``shard=k`` in its spec and converts its share) plus a final job after them that merges the
shards' outcome tables; that last job stands for the stage (``--after`` it, follow it).
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from rsna_tui.jobs.events import read_spec
from rsna_tui.jobs.store import JobRow

if TYPE_CHECKING:
    from rsna_tui.jobs.executor import Executor, Launched
    from rsna_tui.jobs.manager import JobManager


def submit_array(
    manager: "JobManager", stage: str, profile: str, tasks: Sequence[dict[str, Any]], after: Iterable[int | str] = (),
    *, shards: bool = False, cwd: Path | None = None, backend: str | None = None, start: bool = True,
) -> list[JobRow]:
    """One job per entry of ``tasks`` (parameter overrides, e.g. ``{"fold": 2}``), launched together.

    With ``shards`` task k is shard k of its stage. Parameters are checked for every task before
    any job is recorded.
    """
    from rsna_tui.jobs.stage_table import find_stage

    definition = find_stage(stage)
    resolved = [definition.resolve(profile, overrides) for overrides in tasks]
    token = uuid.uuid4().hex
    after = list(after)
    jobs = [
        manager.submit(stage, profile, params=params, function=definition.function, gpu=definition.gpu, after=after,
                       cwd=cwd, start=False, backend=backend, shard=k if shards else None, array=token, expand=False)
        for k, params in enumerate(resolved)
    ]
    if start:
        manager.refresh()
        manager.schedule_and_watch(jobs[0].backend)
    return [manager.job(job.id) for job in jobs]


def submit_sharded(
    manager: "JobManager", stage: str, profile: str, params: dict[str, Any], after: Iterable[int | str] = (),
    *, cwd: Path | None = None, backend: str | None = None, start: bool = True, fingerprint: str | None = None,
) -> JobRow:
    """``shards`` shard jobs as one array, then the final merging job after all of them (returned,
    with the planner's ``fingerprint``: it stands for the stage)."""
    from rsna_tui.jobs.stage_table import find_stage

    definition = find_stage(stage)
    count = int(params["shards"])
    tasks = submit_array(manager, stage, profile, [params] * count, after, shards=True, cwd=cwd, backend=backend,
                         start=False)
    return manager.submit(stage, profile, params=params, function=definition.function, gpu=definition.gpu,
                          after=[t.id for t in tasks], cwd=cwd, start=start, backend=backend, expand=False,
                          fingerprint=fingerprint)


def launch_groups(manager: "JobManager", jobs: Sequence[JobRow]) -> list[list[JobRow]]:
    """The jobs picked by one scheduler pass, in id order, with the tasks of one array together.

    Tasks are grouped only on a backend with arrays and when they share their dependencies (they
    do when submitted by :func:`submit_array`; a retried task runs alone).
    """
    groups: list[list[JobRow]] = []
    by_token: dict[tuple[str, str, tuple[int, ...]], list[JobRow]] = {}
    for job in sorted(jobs, key=lambda j: j.id):
        executor = manager.executors[job.backend]
        token = _array_token(manager, job) if executor.chains else None
        if token is None:
            groups.append([job])
            continue
        key = (job.backend, token, tuple(job.depends_on))
        if key in by_token:
            by_token[key].append(job)
        else:
            by_token[key] = [job]
            groups.append(by_token[key])
    return groups


def start_group(executor: "Executor", job_dirs: Sequence[Path], env: dict[str, str], cwd: Path,
                after: Sequence[str] | None) -> list["Launched"]:
    """Start one job (or an array's jobs) on ``executor``; ``after``: None on a backend that does not chain."""
    if after is None:
        return [executor.start(job_dirs[0], env, cwd)]
    if len(job_dirs) > 1:
        return executor.start_array(job_dirs, env, cwd, after)  # type: ignore[attr-defined]
    return [executor.start(job_dirs[0], env, cwd, after)]  # type: ignore[call-arg]


def _array_token(manager: "JobManager", job: JobRow) -> str | None:
    try:
        return read_spec(manager.job_dir(job)).get("array")
    except (OSError, ValueError):
        return None
