"""The Kaggle gateway's models from a workspace: the third source after arguments and variables.

``engine.inference.gateway.configure`` takes the models from its arguments, else from
``RSNA_TUI_STAGE1_MODEL`` / ``RSNA_TUI_MODELS``. The engine does not read job records, so the
"newest trained models of my workspace" fallback lives here, on the job store: newest means the
highest job id (ids only grow; creation times are stored to the second and can tie).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rsna_tui.jobs.store import Store
from rsna_tui.workspace import Workspace

ENSEMBLE_STAGES = ("finetune1", "finetune2")


def latest_job_with(store: Store, stage: str, name: str) -> tuple[int, Path] | None:
    """The newest succeeded ``stage`` job that registered artefact ``name`` whose file is still
    there, as (job id, path); None when there is none. Shared by the gateway and ``export-kaggle``."""
    for job in store.list_jobs(status="succeeded", stage=stage):  # highest id first
        path = store.artefacts(job.id).get(name)
        if path and Path(path).exists():
            return job.id, Path(path)
    return None


def latest_artefact(store: Store, stage: str, name: str) -> Path | None:
    """The path of :func:`latest_job_with`'s artefact; None when there is none."""
    found = latest_job_with(store, stage, name)
    return found[1] if found else None


def workspace_models(store: Store) -> tuple[Path | None, list[Path]]:
    """The newest stage-1 model (train2d) and stage-2 ensemble (finetune1, finetune2) of a store."""
    models = [m for m in (latest_artefact(store, s, "model") for s in ENSEMBLE_STAGES) if m is not None]
    return latest_artefact(store, "train2d", "model"), models


def configure_from_workspace(workspace: Path | str | None = None, stage1_model: Path | str | None = None,
                             models: Sequence[Path | str] | None = None, **kwargs: Any) -> Any:
    """``engine.inference.configure`` with the workspace's newest models filling what the arguments
    and the environment variables leave out (first match wins: arguments, variables, workspace)."""
    from engine.inference import gateway

    ws = Workspace.choose(workspace)
    stage1_model, models = gateway.model_sources(stage1_model, models)
    if (stage1_model is None or not models) and ws.db_path.exists():
        with Store(ws.db_path, readonly=True) as store:
            found_stage1, found_models = workspace_models(store)
        stage1_model = stage1_model or found_stage1
        models = models or found_models
    return gateway.configure(stage1_model, models, workspace=ws.root, **kwargs)
