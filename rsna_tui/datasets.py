"""Registered datasets of a workspace: ``<workspace>/datasets/<name>``, a link to a Kaggle-layout folder.

A dataset is registered once (``rsna-tui datasets add NAME PATH``, checked with the Kaggle reader
``engine.data.kaggle``) and then named in stage parameters (``--set dataset=NAME``); a path works
too. The demo cohort is the dataset ``demo``: ``demo-data`` writes it there as a real folder, so the
name is reserved. Removing a dataset removes the link only, never the data. The CLI and the app's
Datasets screen both use these functions.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from engine.context import WorkspaceLayout
from engine.stages import ParameterError
from rsna_tui.workspace import Workspace

DEMO = "demo"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DatasetError(ParameterError):
    """A dataset request that cannot be done: unknown name, bad name, a folder the reader refuses."""


def _layout(workspace: Workspace | Path | str) -> WorkspaceLayout:
    return workspace.layout if isinstance(workspace, Workspace) else WorkspaceLayout(Path(workspace))


def dataset_path(workspace: Workspace | Path | str, name: str) -> Path:
    """The folder of a registered dataset (the link resolved); DatasetError naming the known ones."""
    entry = _layout(workspace).datasets / name
    if not _NAME.match(name) or not (entry.exists() or entry.is_symlink()):
        known = ", ".join(d["name"] for d in list_datasets(workspace)) or "none"
        raise DatasetError(f"no dataset {name!r} in {entry.parent} (registered: {known}); "
                           f"add one with `rsna-tui datasets add NAME PATH`")
    if not entry.exists():
        raise DatasetError(f"dataset {name!r} links to {os.readlink(entry)}, which no longer exists; "
                           f"remove it (`rsna-tui datasets remove {name}`) and add it again")
    return entry.resolve()


def list_datasets(workspace: Workspace | Path | str) -> list[dict[str, Any]]:
    """``[{name, path, kind: "link" | "folder", exists}]`` sorted by name."""
    folder = _layout(workspace).datasets
    if not folder.is_dir():
        return []
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        link = entry.is_symlink()
        path = os.readlink(entry) if link else str(entry)
        out.append({"name": entry.name, "path": str(Path(folder, path).resolve()) if entry.exists() else path,
                    "kind": "link" if link else "folder", "exists": entry.exists()})
    return out


def check_folder(path: Path) -> list[str]:
    """The splits the Kaggle reader accepts in ``path``; its message (KaggleSchemaError) as is otherwise."""
    from engine.data.kaggle import KaggleDataset, KaggleSchemaError

    splits, first_error = [], None
    for split in ("train", "test"):
        try:
            data = KaggleDataset.open(path, split)
            data.series_uids()
            data.read_table()
            data.read_localizers()
        except KaggleSchemaError as exc:
            if (path / ("series" if split == "train" else "test/series")).is_dir():
                raise DatasetError(str(exc)) from None  # the split is there but broken
            first_error = first_error or str(exc)
            continue
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read {split} split: {exc}") from None
        splits.append(split)
    if not splits:
        raise DatasetError(first_error or f"{path} is not a Kaggle-layout folder")
    return splits


def add_dataset(workspace: Workspace | Path | str, name: str, path: Path | str) -> dict[str, Any]:
    """Register ``path`` as ``name`` (a link), after the Kaggle reader accepted it."""
    if not _NAME.match(name):
        raise DatasetError(f"dataset name {name!r}: use letters, digits, '.', '_' or '-' (no '/')")
    if name == DEMO:
        raise DatasetError("the name 'demo' is the demo cohort written by the demo-data stage; choose another")
    entry = _layout(workspace).datasets / name
    if entry.exists() or entry.is_symlink():
        raise DatasetError(f"dataset {name!r} exists already ({entry}); remove it first")
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    splits = check_folder(folder)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(folder, target_is_directory=True)
    os.replace(tmp, entry)
    return {"name": name, "path": str(folder), "splits": splits}


def remove_dataset(workspace: Workspace | Path | str, name: str) -> Path:
    """Forget a registered dataset: the link goes, the data stays. Returns the folder it pointed to."""
    entry = _layout(workspace).datasets / name
    if not entry.is_symlink():
        if entry.exists():
            raise DatasetError(f"{entry} is a folder, not a registered link (the demo cohort is one); "
                               f"delete it yourself if you mean to")
        dataset_path(workspace, name)  # raises naming the registered ones
    target = Path(os.readlink(entry))
    entry.unlink()
    return target


def dataset_summary(workspace: Workspace | Path | str, name: str, store: Any = None) -> dict[str, Any]:
    """What a dataset holds, per split: series by modality, positives per location, localizers,
    segmentations, and the outcome of ``convert`` (from its ``conversion.csv``: converted,
    fallback by kind, failed). With a ``store``, also the newest convert job of each split."""
    from engine.data.kaggle import KaggleDataset, KaggleSchemaError
    from engine.labels import LABEL_COLUMNS

    layout = _layout(workspace)
    root = dataset_path(workspace, name)
    summary: dict[str, Any] = {"name": name, "path": str(root), "splits": {}}
    for split in ("train", "test"):
        try:
            data = KaggleDataset.open(root, split)
        except KaggleSchemaError:
            continue
        uids = data.series_uids()
        table = data.read_table()
        points = data.read_localizers()
        info: dict[str, Any] = {
            "series": len(uids),
            "table": data.table_path.name if data.table_path else None,
            "modalities": dict(Counter(table["Modality"])) if table is not None else {},
            "positives": {c: int(table[c].sum()) for c in LABEL_COLUMNS} if table is not None else {},
            "localizers": len(points) if points is not None else 0,
            "localized_series": len({p.series_uid for p in points}) if points else 0,
            "segmentations": sum(1 for uid in uids if data.segmentation(uid) is not None),
            "conversion": conversion_outcome(layout.converted(name, split) / "conversion.csv"),
        }
        if store is not None:
            jobs = [j for j in store.list_jobs(status="succeeded", stage="convert")
                    if j.params.get("dataset") == name and j.params.get("split") == split]
            info["convert_job"] = jobs[0].id if jobs else None
        summary["splits"][split] = info
    return summary


def conversion_outcome(table: Path) -> dict[str, Any] | None:
    """Counts of a ``conversion.csv``: converted, fallback (total and by kind), failed; None if absent."""
    if not table.is_file():
        return None
    import pandas as pd

    rows = pd.read_csv(table, dtype=str, keep_default_na=False)
    status = Counter(rows["status"])
    kinds = Counter(f.split(":")[0] for value in rows.loc[rows["status"] == "converted_fallback", "fallback"]
                    for f in value.split("+") if f)
    return {"converted": status.get("converted", 0), "fallback": status.get("converted_fallback", 0),
            "fallback_kinds": dict(sorted(kinds.items())), "failed": status.get("failed", 0), "total": len(rows)}
