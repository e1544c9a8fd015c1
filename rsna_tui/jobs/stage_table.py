"""The stages the application offers: ``engine.stages.STAGES`` plus optional extra tables.

``RSNA_TUI_EXTRA_STAGES`` names ``module:ATTRIBUTE`` entries (comma separated), each a dict of
:class:`engine.stages.Stage`; tests use it to register test-only stages (one that sleeps, one that
spawns children) that the CLI and the runner then treat like any other. The job's ``spec.json``
records the stage's function, so the runner finds it without the variable.
"""
from __future__ import annotations

import importlib
import os

from engine.stages import STAGES, ParameterError, Stage

EXTRA_VAR = "RSNA_TUI_EXTRA_STAGES"


def all_stages() -> dict[str, Stage]:
    table = dict(STAGES)
    for ref in filter(None, (r.strip() for r in os.environ.get(EXTRA_VAR, "").split(","))):
        module, _, attr = ref.partition(":")
        table.update(getattr(importlib.import_module(module), attr))
    return table


def find_stage(name: str) -> Stage:
    """The stage ``name``; a ParameterError listing the stages otherwise."""
    table = all_stages()
    if name not in table:
        raise ParameterError(f"unknown stage {name!r}; stages: {', '.join(table)}")
    return table[name]
