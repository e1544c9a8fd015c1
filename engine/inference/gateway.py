"""The Kaggle evaluation gateway's entry point: ``predict(series_path)`` -> one row of 14 probabilities.

The gateway calls ``predict`` once per test series, in random order, with a folder of that series'
DICOM files (COMPETITION.md). The models are loaded once, on the first call, into a module-level
:class:`~engine.inference.predictor.Predictor`. Where they come from, first match wins:

1. an explicit ``configure(stage1_model=..., models=[...], tta=8, device="auto")`` call (a notebook
   does this once before starting the gateway);
2. environment variables ``RSNA_TUI_STAGE1_MODEL`` (a stage-1 results folder) and ``RSNA_TUI_MODELS``
   (stage-2 results folders or checkpoints, separated by commas).

The engine does not look through a workspace's jobs: ``rsna_tui.gateway.configure_from_workspace``
(the application, which owns the job records) adds the newest successful ``train2d`` /
``finetune1`` / ``finetune2`` models of a workspace as a third source, after these two.

``RSNA_TUI_TTA`` (1, 4 or 8; default 8) and ``RSNA_TUI_DEVICE`` (auto, cuda, cpu) tune the lazily built
predictor. A series that cannot be read gives 0.5 everywhere; ``last_prediction()`` says why.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from engine.context import WorkspaceLayout
from engine.inference.predictor import Predictor, SeriesPrediction
from engine.nnunet_runtime import configure_environment

ENV_STAGE1 = "RSNA_TUI_STAGE1_MODEL"
ENV_MODELS = "RSNA_TUI_MODELS"
ENV_WORKSPACE = "RSNA_TUI_WORKSPACE"
ENV_TTA = "RSNA_TUI_TTA"
ENV_DEVICE = "RSNA_TUI_DEVICE"

_predictor: Predictor | None = None
_last: SeriesPrediction | None = None


def configure(stage1_model: Path | str | None = None, models: Sequence[Path | str] | None = None,
              workspace: Path | str | None = None, tta: int | None = None, device: str | None = None,
              **predictor_kwargs: object) -> Predictor:
    """Build (or rebuild) the predictor ``predict`` uses; arguments left out come from the environment.

    ``workspace`` (else ``RSNA_TUI_WORKSPACE``) only points nnU-Net's folders at that workspace.
    """
    global _predictor
    workspace = workspace or os.environ.get(ENV_WORKSPACE)
    if workspace:
        configure_environment(WorkspaceLayout(Path(workspace)))
    stage1_model, models = model_sources(stage1_model, models)
    if stage1_model is None or not models:
        raise RuntimeError(
            f"no {'stage-1 model' if stage1_model is None else 'stage-2 models'} for predict(). Give them in one "
            f"of these ways: engine.inference.configure(stage1_model=..., models=[...]); the environment "
            f"variables {ENV_STAGE1} (a stage-1 results folder) and {ENV_MODELS} (stage-2 results folders, "
            f"comma separated); or a workspace's newest trained models with "
            f"rsna_tui.gateway.configure_from_workspace(workspace)"
        )
    _predictor = Predictor(stage1_model, list(models), tta=int(tta or os.environ.get(ENV_TTA, 8)),
                           device=device or os.environ.get(ENV_DEVICE, "auto"), **predictor_kwargs)  # type: ignore[arg-type]
    return _predictor


def model_sources(stage1_model: Path | str | None = None, models: Sequence[Path | str] | None = None
                  ) -> tuple[Path | str | None, list[Path | str]]:
    """The models from the arguments, else from ``RSNA_TUI_STAGE1_MODEL`` / ``RSNA_TUI_MODELS`` (each alone)."""
    stage1_model = stage1_model or os.environ.get(ENV_STAGE1) or None
    if not models and os.environ.get(ENV_MODELS):
        models = [m.strip() for m in os.environ[ENV_MODELS].split(",") if m.strip()]
    return stage1_model, list(models or [])


def predict(series_path: str | Path) -> pd.DataFrame:
    """Kaggle gateway contract: a one-row frame with exactly the 14 label columns, in submission order."""
    global _last
    predictor = _predictor or configure()
    _last = predictor.predict_series(series_path)
    return _last.frame()


def last_prediction() -> SeriesPrediction | None:
    """Details (status, reason, box, timings) of the latest ``predict`` call."""
    return _last


def reset() -> None:
    """Forget the loaded predictor (the next ``predict`` configures again)."""
    global _predictor, _last
    _predictor, _last = None, None
