"""The whole pipeline of one dataset: the planner aimed at ``predict``, then ``evaluate`` when the
predicted split has a truth table (``rsna-tui pipeline``, ``make demo``, the app's Pipeline screen).

There is no list of steps here: the stages and their order come from the inputs declared in
``engine/stages.py``, through the planner.
"""
from __future__ import annotations

from typing import Sequence

from engine.stages import ParameterError
from rsna_tui.jobs.manager import JobManager
from rsna_tui.jobs.planner import Plan, plan

PREDICT, EVALUATE = "predict", "evaluate"


def has_truth(manager: JobManager, dataset: str, split: str, produced: bool) -> bool:
    """Whether predicting ``dataset`` / ``split`` registers a ``truth`` artefact (a truth table)."""
    if produced:
        return True  # demo-data writes test_truth.csv beside the held-out split
    from engine.data.kaggle import KaggleDataset, KaggleSchemaError

    try:
        return KaggleDataset.open(manager.workspace.layout.dataset(dataset), split).table_path is not None
    except KaggleSchemaError:
        return False


def pipeline_plan(manager: JobManager, dataset: str | None = None, profile: str = "tiny",
                  overrides: Sequence[str] = (), until: str | None = None, *, force: bool = False,
                  rerun: Sequence[str] = ()) -> Plan:
    """The plan of the whole pipeline on ``dataset`` (default: the profiles'), or up to ``until``."""
    extra = [f"dataset={dataset}"] if dataset else []
    for item in overrides:
        if "." not in item.partition("=")[0]:
            raise ParameterError(f"pipeline --set {item}: name the stage, as stage.key=value (e.g. train2d.epochs=2)")
    predict_overrides = [o for o in overrides if not o.startswith(EVALUATE + ".")]
    full = plan(manager, PREDICT, profile, [*extra, *predict_overrides], force=force, rerun=rerun)
    step = full.target_step
    produced = any(s.stage == "demo-data" for s in full.steps)
    target = EVALUATE if has_truth(manager, step.params["dataset"], step.params["split"], produced) else PREDICT
    if until is not None:
        stages = [*dict.fromkeys(s.stage for s in full.steps), *([EVALUATE] if target == EVALUATE else [])]
        if until not in stages:
            raise ParameterError(f"--until {until}: not a stage of this pipeline; its stages: {', '.join(stages)}")
        target = until
    return plan(manager, target, profile, [*extra, *overrides], force=force, rerun=rerun)
