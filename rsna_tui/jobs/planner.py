"""The planner: what ``rsna-tui run --stage X`` must do so that X's inputs are up to date, like ``make``.

From the target's resolved parameters it walks the stage inputs declared in ``engine/stages.py``
(the only description of the graph) and decides, upstream first, per step:

- **reuse** job N: a succeeded job with the same *fingerprint* (a hash of its parameters and of its
  upstream steps' fingerprints), whose outputs are still on disk and not overwritten since;
- **wait** for job N: a queued or running job with that fingerprint will produce it;
- **run**: a new job; its reason says why (no earlier job, which parameters differ from the closest
  earlier job of the stage, stale because an upstream step runs again, outputs gone, ``--force``,
  ``--rerun``).

Parameters that an input fills (``roi.model``) get the upstream job's artefact path when that job is
reused, else a ``job:<id>/<artefact>`` reference that the runner resolves at start (``jobs.inputs``).
:func:`submit_plan` plans again under an exclusive lock on the workspace and submits the new steps with
``--after`` links, so two planners started at once submit each step once. A failed job cancels
nothing: its dependants fail naming it (the manager's dependency rule).

Overrides: ``key=value`` for the target, ``stage.key=value`` for an upstream stage; an unqualified
``dataset=NAME`` is the dataset of the whole plan (every stage with a ``dataset`` parameter).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from engine.stages import ParameterError, Stage, split_refs
from rsna_tui.jobs.inputs import job_ref
from rsna_tui.jobs.manager import JobManager
from rsna_tui.jobs.steps import REUSE, RUN, WAIT, Plan, PlanError, Step
from rsna_tui.jobs.stage_table import all_stages, find_stage
from rsna_tui.jobs.store import ACTIVE, JobRow

__all__ = ["REUSE", "RUN", "WAIT", "Plan", "PlanError", "Step", "plan", "planner_lock", "submit_plan"]

LOCK_NAME = "planner.lock"


def plan(manager: JobManager, stage: str, profile: str = "tiny", overrides: Sequence[str] = (), *,
         force: bool = False, rerun: Sequence[str] = (), deps: bool = True) -> Plan:
    """The plan for ``stage`` (nothing is submitted). ParameterError for a bad request, PlanError
    when an input cannot be provided."""
    if not manager.store.readonly:
        manager.refresh()  # fold what active jobs did meanwhile
    request = Plan(stage, [], profile, tuple(overrides), force, tuple(rerun), deps)
    return _Planner(manager, request).build()


def submit_plan(manager: JobManager, plan: Plan, after: Sequence[int] = ()) -> Plan:
    """Plan again under the workspace's planner lock and submit the ``run`` steps; returns that plan,
    its steps carrying their job ids. ``after``: extra dependencies of the target."""
    with planner_lock(manager.workspace.root):
        manager.refresh()  # what another planner submitted, or a job finished, since ``plan``
        fresh = _Planner(manager, plan).build()
        for index, step in enumerate(fresh.steps):
            if step.action != RUN:
                continue
            params = dict(step.params)
            for name, parts in step.fills.items():
                params[name] = ",".join(_fill(manager, fresh, part) for part in parts)
            links = [fresh.steps[u].job_id for u in step.upstream if fresh.steps[u].action in (RUN, WAIT)]
            if index == len(fresh.steps) - 1:
                links += list(after)
            job = manager.submit(step.stage, step.profile, params=params, after=[j for j in links if j is not None],
                                 fingerprint=step.fingerprint)
            step.job_id, step.params = job.id, params
    return fresh


@contextmanager
def planner_lock(root: Path) -> Iterator[None]:
    """An exclusive flock on ``<workspace>/planner.lock`` (blocks until the other planner is done)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fill(manager: JobManager, plan: Plan, part: tuple[int, str] | str) -> str:
    if isinstance(part, str):
        return part
    upstream = plan.steps[part[0]]
    if upstream.action == REUSE:
        return _artefact(manager, upstream.job_id, part[1])  # type: ignore[arg-type]
    return job_ref(upstream.job_id, part[1])  # type: ignore[arg-type]


def _artefact(manager: JobManager, job_id: int, name: str) -> str:
    artefacts = manager.store.artefacts(job_id)
    if name not in artefacts:
        raise PlanError(f"job {job_id} registered no '{name}' artefact (it has: {', '.join(artefacts) or 'none'})")
    return artefacts[name]


def fingerprint(stage: str, own: dict[str, Any], inputs: dict[str, list[str]], after: list[str],
                source: str | None) -> str:
    """sha256 of a step's own parameters, its filled inputs (upstream fingerprints or given paths),
    its other upstream fingerprints and the folder of a registered dataset it reads."""
    data = {"stage": stage, "params": own, "inputs": inputs, "after": sorted(after), "source": source}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class _Planner:
    """One walk of the graph for one request."""

    def __init__(self, manager: JobManager, request: Plan) -> None:
        self.manager, self.request = manager, request
        self.table = all_stages()
        self.target = find_stage(request.target)
        self.steps: list[Step] = []
        self.memo: dict[tuple[str, str], int] = {}
        self.own: dict[str, dict[str, str]] = {}
        self.dataset: str | None = None
        self._succeeded: dict[str, list[JobRow]] = {}
        #: Dataset names a stage of the table writes (demo-data: ``demo``), so need not exist yet.
        self.produced = {i.when_dataset for s in self.table.values() for i in s.inputs if i.when_dataset}
        for stage in request.rerun:
            find_stage(stage)
        self._split_overrides(request.overrides)

    def _split_overrides(self, overrides: Sequence[str]) -> None:
        for item in overrides:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ParameterError(f"override {item!r} is not key=value (or stage.key=value)")
            stage, dot, name = key.rpartition(".")
            if not dot:
                stage, name = self.target.name, key
            elif stage not in self.table:
                raise ParameterError(f"--set {item}: unknown stage {stage!r}; stages: {', '.join(self.table)}")
            if name == "dataset" and not dot:
                self.dataset = value.strip()
                if not any(p.name == "dataset" for p in self.target.params):
                    continue  # the plan's dataset, for the upstream stages
            self.own.setdefault(stage, {})[name] = value.strip()

    def build(self) -> Plan:
        self._walk(self.target.name, {}, "", ())
        planned = {s.stage for s in self.steps}
        for stage in self.request.rerun:
            if stage not in planned:
                raise ParameterError(f"--rerun {stage}: {stage} is not part of the plan for {self.target.name}")
        unused = sorted(set(self.own) - planned)
        if unused:
            raise ParameterError(f"--set {unused[0]}.…: {unused[0]} is not part of the plan for {self.target.name} "
                                 f"(its steps: {', '.join(dict.fromkeys(s.stage for s in self.steps))})")
        if self.dataset is not None and not any("dataset" in s.params for s in self.steps):
            raise ParameterError(f"dataset={self.dataset}: no stage of the plan for {self.target.name} reads a dataset")
        if not self.request.deps:
            self._only_target()
        request = self.request
        return Plan(request.target, self.steps, request.profile, request.overrides, request.force, request.rerun,
                    request.deps)

    # -- walking ----------------------------------------------------------------------------------

    def _values(self, definition: Stage, required: dict[str, Any], consumer: str) -> dict[str, Any]:
        own = self.own.get(definition.name, {})
        base: dict[str, Any] = {}
        if self.dataset is not None and "dataset" not in own and any(p.name == "dataset" for p in definition.params):
            base["dataset"] = self.dataset
        values = definition.resolve(self.request.profile, {**base, **own})
        for key, value in required.items():
            if key in own and values[key] != value:
                raise ParameterError(f"--set {definition.name}.{key}={own[key]} conflicts with {consumer}'s "
                                     f"{key}={value}: {definition.name} must match it; set it on {consumer}")
            values[key] = value
        return values

    def _walk(self, name: str, required: dict[str, Any], consumer: str, chain: tuple[str, ...]) -> int:
        if name in chain:
            raise PlanError(f"stage inputs form a cycle: {' -> '.join((*chain, name))}")
        definition = self.table[name]
        values = self._values(definition, required, consumer)
        key = (name, json.dumps(values, sort_keys=True, default=str))
        if key in self.memo:
            return self.memo[key]
        self._check_dataset(name, values)
        chain = (*chain, name)
        upstream: list[int] = []
        after: list[str] = []
        for inp in definition.inputs:
            if not inp.param and inp.active(values):
                index = self._walk(inp.stage, self._required(inp, values), name, chain)
                upstream.append(index)
                after.append(self.steps[index].fingerprint)
        fills: dict[str, list[tuple[int, str] | str]] = {}
        prints: dict[str, list[str]] = {}
        shown = dict(values)
        for param in dict.fromkeys(i.param for i in definition.inputs if i.param):
            fills[param], prints[param], parts_shown = self._fill_param(definition, param, values, chain, upstream)
            shown[param] = ",".join(parts_shown)
        own = {k: v for k, v in values.items() if k not in fills}
        source = self._source(values, definition)
        step = Step(name, shown, RUN, None, "", list(dict.fromkeys(upstream)),
                    fingerprint(name, own, prints, after, source), self.request.profile, fills)
        self._decide(step, is_target=not consumer, own=own)
        self.steps.append(step)
        index = len(self.steps) - 1
        self.memo[key] = index
        return index

    @staticmethod
    def _required(inp: Any, values: dict[str, Any]) -> dict[str, Any]:
        return {**{k: values[k] for k in inp.match}, **dict(inp.fixed)}

    def _fill_param(self, definition: Stage, param: str, values: dict[str, Any], chain: tuple[str, ...],
                    upstream: list[int]) -> tuple[list[tuple[int, str] | str], list[str], list[str]]:
        """Per part of ``param``: what fills it, what enters the fingerprint, what the plan shows."""
        inputs = {i.stage: i for i in definition.inputs if i.param == param}
        artefact = next(iter(inputs.values())).artefact
        fills: list[tuple[int, str] | str] = []
        prints, shown = [], []
        for part in split_refs(values[param]):
            if part in inputs:
                index = self._walk(part, self._required(inputs[part], values), definition.name, chain)
                step = self.steps[index]
                upstream.append(index)
                fills.append((index, inputs[part].artefact))
                prints.append(step.fingerprint)
                shown.append(self._shown(step, inputs[part].artefact))
                continue
            if part.isdigit():
                path = self._job_input(int(part), definition.name, param, artefact)
            elif part in self.table:
                raise ParameterError(f"{definition.name}.{param}={part}: {part} is not an input of {param} "
                                     f"(inputs: {', '.join(inputs)}); give a path or a job id")
            else:
                path = str(Path(part).expanduser().resolve())
                if not Path(path).exists():
                    raise PlanError(f"{definition.name}.{param}: {path} does not exist")
            fills.append(path)
            prints.append(path)
            shown.append(path)
        return fills, prints, shown

    def _shown(self, step: Step, artefact: str) -> str:
        if step.action == REUSE:
            return self.manager.store.artefacts(step.job_id).get(artefact, f"job:{step.job_id}/{artefact}")  # type: ignore[arg-type]
        if step.action == WAIT:
            return job_ref(step.job_id, artefact)  # type: ignore[arg-type]
        return f"{step.stage}/{artefact}"  # a job to be submitted: its reference once it has an id

    def _only_target(self) -> None:
        """``--no-deps``: the target alone, always submitted (as ``run`` did before the planner), its
        filled inputs taken from jobs that exist (reuse or wait) or as given."""
        target = self.steps[-1]
        kept: list[int] = []
        for param, parts in target.fills.items():
            for part in parts:
                if isinstance(part, tuple):
                    upstream = self.steps[part[0]]
                    if upstream.action == RUN:
                        raise PlanError(f"{target.stage}.{param} needs a {upstream.stage} job ({upstream.reason}), and "
                                        f"--no-deps plans no upstream job; drop --no-deps, or give {param} as a path "
                                        f"or a job id")
                    kept.append(part[0])
        mapping = {old: new for new, old in enumerate(dict.fromkeys(kept))}
        for old in mapping:
            self.steps[old].upstream, self.steps[old].fills = [], {}
        target.fills = {p: [(mapping[x[0]], x[1]) if isinstance(x, tuple) else x for x in parts]
                        for p, parts in target.fills.items()}
        target.upstream = [mapping[u] for u in target.upstream if u in mapping]
        self.steps = [self.steps[old] for old in mapping] + [target]
        target.action, target.job_id = RUN, None  # submitted whatever ran before, as without the planner
        target.reason = "--force" if self.request.force else "--no-deps"

    def _job_input(self, job_id: int, stage: str, param: str, artefact: str) -> str:
        """A job id the user gave for an input: that succeeded job's artefact path."""
        job = self.manager.job(job_id)
        if job.status != "succeeded":
            raise PlanError(f"{stage}.{param}={job_id}: job {job_id} ({job.stage}) is {job.status}, not succeeded")
        path = _artefact(self.manager, job_id, artefact)
        if not Path(path).exists():
            raise PlanError(f"{stage}.{param}={job_id}: job {job_id}'s {artefact} {path} no longer exists")
        return path

    def _check_dataset(self, stage: str, values: dict[str, Any]) -> None:
        name = values.get("dataset")
        if name is None or name in self.produced:
            return
        if not self.manager.workspace.layout.dataset(str(name)).is_dir():
            raise ParameterError(f"{stage}: dataset {name!r} is neither registered in "
                                 f"{self.manager.workspace.layout.datasets} (see `rsna-tui datasets`) nor a folder")

    def _source(self, values: dict[str, Any], definition: Stage) -> str | None:
        """The folder of a dataset no step of the plan writes (so re-registering it changes the print)."""
        name = values.get("dataset")
        if name is None or name in self.produced:
            return None
        return str(self.manager.workspace.layout.dataset(str(name)).resolve())

    # -- deciding ---------------------------------------------------------------------------------

    def _decide(self, step: Step, is_target: bool, own: dict[str, Any]) -> None:
        request = self.request
        runs = list(dict.fromkeys(self.steps[u].stage for u in step.upstream if self.steps[u].action == RUN))
        if is_target and request.force:
            step.reason = "--force"
        elif step.stage in request.rerun:
            step.reason = f"--rerun {step.stage}"
        elif runs:
            step.reason = self._why_new(step, own, runs)
        elif not self._match(step):
            step.reason = step.reason or self._why_new(step, own, [])

    def _match(self, step: Step) -> bool:
        jobs = self.manager.store.jobs_with_fingerprint(step.stage, step.fingerprint)
        for job in jobs:
            if job.status == "succeeded":
                problem = self._outputs_problem(job)
                if problem is None:
                    step.action, step.job_id = REUSE, job.id
                    step.reason = f"job {job.id} succeeded with the same parameters and inputs"
                    return True
                step.reason = step.reason or f"job {job.id} had the same parameters and inputs, but {problem}"
        for job in jobs:
            if job.status in ACTIVE:
                step.action, step.job_id = WAIT, job.id
                step.reason = f"job {job.id} ({job.status}) has the same parameters and inputs"
                return True
        return False

    def _outputs_problem(self, job: JobRow) -> str | None:
        artefacts = self.manager.store.artefacts(job.id)
        gone = [p for p in artefacts.values() if not Path(p).exists()]
        if gone:
            return f"its output {gone[0]} is gone"
        paths = set(artefacts.values())
        for later in self._succeeded_of(job.stage):
            if later.id > job.id and later.fingerprint != job.fingerprint \
                    and paths & set(self.manager.store.artefacts(later.id).values()):
                return f"job {later.id} (other parameters) has overwritten its outputs since"
        return None

    def _succeeded_of(self, stage: str) -> list[JobRow]:
        if stage not in self._succeeded:
            self._succeeded[stage] = self.manager.store.list_jobs(status="succeeded", stage=stage)
        return self._succeeded[stage]

    def _why_new(self, step: Step, own: dict[str, Any], runs: list[str]) -> str:
        """Why no earlier job does: none yet, other parameters than the closest one, or stale inputs."""
        jobs = self._succeeded_of(step.stage)  # newest first
        upstream = f"{', '.join(runs)} run{'s' if len(runs) == 1 else ''} again" if runs else ""
        if not jobs:
            return f"no earlier {step.stage} job"
        diffs = [[f"{k} {json.dumps(j.params.get(k))} -> {json.dumps(v)}" for k, v in own.items()
                  if j.params.get(k) != v] for j in jobs]
        best = min(range(len(jobs)), key=lambda i: len(diffs[i]))  # the closest job, the newest of equals
        closest, changed = jobs[best], diffs[best]
        if changed:
            return f"parameters differ from job {closest.id}: {', '.join(changed)}" + (f"; {upstream}" if runs else "")
        if runs:
            return f"stale: {upstream}, so job {closest.id} (same parameters) is out of date"
        if closest.fingerprint is None:
            return f"job {closest.id} has the same parameters but no fingerprint (not submitted by the planner)"
        return f"stale: job {closest.id} has the same parameters but was made from other inputs"
