"""The entry of a Kaggle notebook: the two-stage model behind the competition's evaluation server.

A notebook (``rsna-tui export-kaggle`` writes one, ``notebook.py``) calls::

    from engine.inference import kaggle
    kaggle.serve(stage1_model="models/stage1/...", models=["models/stage2_1/...", "models/stage2_2/..."])

:func:`serve` builds the predictor once (``engine.inference.configure``: models loaded before the first
series, so the gateway's per-series 30 minutes are spent on series), then serves :func:`predict`:

* with ``kaggle_evaluation`` importable (the competition's notebook):
  ``kaggle_evaluation.rsna_inference_server.RSNAInferenceServer(predict)``, ``server.serve()`` when
  ``KAGGLE_IS_COMPETITION_RERUN`` is set, otherwise ``server.run_local_gateway(...)``;
* otherwise :func:`local_gateway`, the same loop in this process: every series of a folder in random
  order, its top-level ``*.dcm`` files copied below the shared folder as the competition's gateway
  shares them, ``predict`` called with that folder, the row checked (one row, the 14 label columns) and
  collected into a submission file with ``SeriesInstanceUID`` first.

:func:`predict` (the gateway's ``predict(series_path)``) returns one row of the 14 label columns, as a
polars frame when polars is importable (what the competition's own demo returns) and pandas otherwise;
either is what the gateway accepts. Afterwards it clears the shared series folder (``/kaggle/shared``
unless :func:`serve` names another), as the competition's demo does to stay within the disk: the
whole hidden test set passes through that folder. Only a series that lies inside the shared folder
triggers the clearing, so calling ``predict`` on a folder of one's own never deletes it.

Folders and files can also come from the environment, for a notebook that is run unchanged:
``RSNA_TUI_KAGGLE_SERIES`` (series folder for the local gateway), ``RSNA_TUI_KAGGLE_SHARED`` (shared
folder), ``RSNA_TUI_KAGGLE_SUBMISSION`` (the local gateway's output, ``.csv`` or ``.parquet``).
"""
from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from engine.inference import gateway
from engine.labels import LABEL_COLUMNS

KEY = "SeriesInstanceUID"
KAGGLE_SHARED = Path("/kaggle/shared")
#: Where the competition's data lies in a Kaggle notebook (the local gateway's default series folder).
KAGGLE_SERIES = Path("/kaggle/input/rsna-intracranial-aneurysm-detection/series")
KAGGLE_SUBMISSION = Path("/kaggle/working/submission.csv")
RERUN_ENV = "KAGGLE_IS_COMPETITION_RERUN"
ENV_SERIES = "RSNA_TUI_KAGGLE_SERIES"
ENV_SHARED = "RSNA_TUI_KAGGLE_SHARED"
ENV_SUBMISSION = "RSNA_TUI_KAGGLE_SUBMISSION"
FRAMES = ("auto", "polars", "pandas")

_shared_dir: Path = KAGGLE_SHARED
_frame: str = "auto"


class GatewayError(ValueError):
    """A ``predict`` answer the competition's gateway would refuse; the message names the series."""


def _polars() -> Any:
    try:
        import polars
    except ImportError:
        return None
    return polars


def as_frame(row: pd.DataFrame, kind: str = "auto") -> Any:
    """The 14-column pandas row as the frame type asked for (``auto``: polars when importable)."""
    if kind not in FRAMES:
        raise ValueError(f"frame {kind!r}: use one of {', '.join(FRAMES)}")
    polars = _polars() if kind != "pandas" else None
    if polars is None:
        if kind == "polars":
            raise ImportError("frame='polars' needs the polars package (pip install polars)")
        return row
    return polars.DataFrame({column: row[column].astype(float).tolist() for column in row.columns})


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def clear_shared(series_path: Path | str, shared_dir: Path | str) -> bool:
    """Empty the shared folder after a series read from it; False (nothing deleted) for any other path."""
    shared = Path(shared_dir)
    if not shared.is_dir() or not _inside(Path(series_path), shared):
        return False
    for child in shared.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    return True


def predict(series_path: str | Path) -> Any:
    """The gateway's ``predict``: one row of the 14 label columns (polars or pandas), never raising for a
    bad series (0.5 everywhere, ``engine.inference.last_prediction()`` says why); the shared folder is
    cleared afterwards, whatever happened."""
    try:
        row = gateway.predict(series_path)
    finally:
        clear_shared(series_path, _shared_dir)
    return as_frame(row, _frame)


def check_row(frame: Any, uid: str) -> dict[str, float]:
    """What the gateway and the scorer check of one answer: a frame with one row and the 14 columns."""
    polars = _polars()
    if polars is not None and isinstance(frame, polars.DataFrame):
        columns, rows = list(frame.columns), frame.to_dicts()
    elif isinstance(frame, pd.DataFrame):
        columns, rows = list(frame.columns), frame.to_dict("records")
    else:
        raise GatewayError(f"series {uid}: predict returned {type(frame).__name__}, not a polars or pandas frame")
    if len(rows) != 1:
        raise GatewayError(f"series {uid}: predict returned {len(rows)} rows; the gateway needs exactly one")
    if columns != list(LABEL_COLUMNS):
        raise GatewayError(f"series {uid}: predict returned the columns {columns}; expected the 14 label columns "
                           f"in submission order")
    return {c: float(rows[0][c]) for c in LABEL_COLUMNS}


def share_series(series_dir: Path, shared_dir: Path) -> Path:
    """Copy a series' top-level ``*.dcm`` files where the competition's gateway shares them:
    ``<shared>/<the series folder's absolute path without its anchor>``."""
    target = shared_dir / series_dir.resolve().relative_to(series_dir.resolve().anchor)
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(series_dir.glob("*.dcm")):
        shutil.copy2(path, target / path.name)
    return target


def write_submission(submission: pd.DataFrame, out: Path) -> Path:
    """Write under a temporary name, then rename: ``.parquet`` (polars, else pandas' engine) or CSV."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    polars = _polars()
    if out.suffix != ".parquet":
        submission.to_csv(partial, index=False)
    elif polars is not None:
        polars.DataFrame(submission.to_dict("list")).write_parquet(partial)
    else:
        submission.to_parquet(partial, index=False)
    os.replace(partial, out)
    return out


def local_gateway(predict_fn: Callable[[str], Any], series_dir: Path | str, shared_dir: Path | str,
                  out: Path | str | None = None, test_csv: Path | str | None = None,
                  seed: int | None = None, log: Callable[[str], None] = print) -> pd.DataFrame:
    """The competition's gateway loop, in process: each series of ``series_dir`` (or of ``test_csv``'s
    SeriesInstanceUID column) in random order, shared, predicted and checked; the submission (``KEY`` +
    the 14 columns) is returned and, with ``out``, written (``.parquet`` or ``.csv``)."""
    series_dir, shared_dir = Path(series_dir), Path(shared_dir)
    if test_csv is not None:
        uids = sorted(pd.read_csv(test_csv, dtype={KEY: str})[KEY].unique())
    else:
        uids = sorted(p.name for p in series_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not uids:
        raise FileNotFoundError(f"no series folders in {series_dir}")
    rows, slowest = [], (0.0, "")
    for uid in random.Random(seed).sample(uids, len(uids)):
        if not (series_dir / uid).is_dir():
            raise FileNotFoundError(f"series {uid} of {test_csv} has no folder in {series_dir}")
        shared = share_series(series_dir / uid, shared_dir)
        started = time.perf_counter()
        answer = predict_fn(str(shared))
        slowest = max(slowest, (time.perf_counter() - started, uid))
        rows.append({KEY: uid, **check_row(answer, uid)})
    submission = pd.DataFrame(rows, columns=[KEY, *LABEL_COLUMNS])
    if out is not None:
        out = write_submission(submission, Path(out))
    log(f"{len(rows)} series predicted{f' into {out}' if out else ''}; slowest {slowest[1]} {slowest[0]:.1f} s")
    return submission


def _inference_server() -> Any:
    """The competition's server class, or None outside a Kaggle notebook of this competition."""
    try:
        from kaggle_evaluation.rsna_inference_server import RSNAInferenceServer
    except ImportError:
        return None
    return RSNAInferenceServer


def serve(stage1_model: Path | str | None = None, models: Sequence[Path | str] | None = None, *,
          tta: int | None = None, device: str | None = None, shared_dir: Path | str | None = None,
          series_dir: Path | str | None = None, out: Path | str | None = None,
          data_paths: Sequence[str] | None = None, frame: str = "auto", seed: int | None = None) -> pd.DataFrame | None:
    """Build the predictor once, then serve :func:`predict` (see the module docstring for which gateway).

    Models left out come from ``engine.inference.configure``'s environment variables. ``data_paths`` is
    handed to the competition's ``run_local_gateway``; ``series_dir`` / ``out`` are those of
    :func:`local_gateway`. Returns the local gateway's submission, None behind the competition's server.
    """
    global _shared_dir, _frame
    if frame not in FRAMES:
        raise ValueError(f"frame {frame!r}: use one of {', '.join(FRAMES)}")
    predictor = gateway.configure(stage1_model=stage1_model, models=models, tta=tta, device=device)
    print(f"rsna-tui predictor: {predictor.describe()}", flush=True)
    chosen_share = shared_dir or os.environ.get(ENV_SHARED)
    _shared_dir = Path(chosen_share or KAGGLE_SHARED)
    _frame = frame
    server_class = _inference_server()
    if server_class is not None:
        server = server_class(predict)
        if os.environ.get(RERUN_ENV):
            server.serve()
        else:  # the competition's gateway shares into /kaggle/shared unless told otherwise, as predict clears
            server.run_local_gateway(data_paths=tuple(data_paths) if data_paths else None,
                                     file_share_dir=str(chosen_share) if chosen_share else None)
        return None
    series = Path(series_dir or os.environ.get(ENV_SERIES) or KAGGLE_SERIES)
    target = out or os.environ.get(ENV_SUBMISSION) or KAGGLE_SUBMISSION
    test_csv = data_paths[0] if data_paths else None
    return local_gateway(predict, Path(data_paths[1]) if data_paths else series, _shared_dir, target,
                         test_csv=test_csv, seed=seed)
