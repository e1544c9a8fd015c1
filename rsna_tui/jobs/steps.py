"""What a plan is: its steps (reuse job N, wait for job N, run) and their JSON form.

Built by :mod:`rsna_tui.jobs.planner` (which also exports these names); read by the CLI's ``--dry-run``,
the app's Pipeline screen and the Slurm backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from rsna_tui.jobs.manager import JobError

REUSE, WAIT, RUN = "reuse", "wait", "run"


class PlanError(JobError):
    """The target's inputs cannot be planned (exit 1); nothing was submitted."""


@dataclass
class Step:
    """One job of a plan: reuse job N, wait for job N, or run a new one."""

    stage: str
    params: dict[str, Any]
    action: str
    job_id: int | None
    reason: str
    upstream: list[int]
    fingerprint: str
    profile: str = "tiny"
    #: Filled parameters: per part, ``(upstream step index, artefact)`` or a path given by the user.
    fills: dict[str, list[tuple[int, str] | str]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "action": self.action, "job_id": self.job_id, "reason": self.reason,
                "upstream": self.upstream, "fingerprint": self.fingerprint, "profile": self.profile,
                "params": self.params}


@dataclass
class Plan:
    """The steps towards ``target``, upstream first (the target is the last step)."""

    target: str
    steps: list[Step]
    profile: str = "tiny"
    overrides: tuple[str, ...] = ()
    force: bool = False
    rerun: tuple[str, ...] = ()
    deps: bool = True

    @property
    def target_step(self) -> Step:
        return self.steps[-1]

    def job_ids(self, actions: Sequence[str] = (RUN, WAIT)) -> list[int]:
        """Job ids of the steps with these actions (after :func:`submit_plan`: the jobs to follow)."""
        return [s.job_id for s in self.steps if s.action in actions and s.job_id is not None]

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "profile": self.profile,
                "steps": [{"index": i, **s.to_json()} for i, s in enumerate(self.steps)]}
