"""``convert`` split over shard jobs (a Slurm array), and the final step that merges their tables.

Shard k of N converts every N-th series of the size-ordered list (so shards get similar work) into
the same folders as an unsharded run, and writes its outcome tables as
``shards/conversion.<k>-of-<N>.csv`` and ``shards/localizers_voxel.<k>-of-<N>.csv``. The merging
step (the job without a shard) checks that the N tables cover exactly the split's series, writes
``conversion.csv`` and ``localizers_voxel.csv`` as one unsharded run would (rows by series UID),
tidies the folder and registers the artefacts. Shards never remove another series' files, so they
can run side by side; a rerun skips unchanged series as usual.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, TypeVar

import pandas as pd

from engine.context import StageContext
from engine.data.kaggle import KaggleDataset

T = TypeVar("T")
SHARDS_DIR = "shards"


def share(tasks: Sequence[T], shard: int | None, shards: int) -> list[T]:
    """The tasks of shard ``shard`` (every ``shards``-th of the size-ordered list)."""
    if shard is None or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not one of 0..{shards - 1}")
    return list(tasks[shard::shards])


def _suffix(shard: int, shards: int) -> str:
    return f".{shard}-of-{shards}"


def write_shard(out: Path, shard: int | None, shards: int, rows: list[dict[str, Any]],
                voxel_rows: list[dict[str, Any]], reporter: Any) -> None:
    """The outcome tables of one shard, and its counts as metrics."""
    from engine.data.convert import STATUSES
    from engine.data.convert_tables import write_tables

    assert shard is not None
    folder = out / SHARDS_DIR
    folder.mkdir(exist_ok=True)
    write_tables(folder, rows, voxel_rows, _suffix(shard, shards))
    for status in STATUSES:
        reporter.metric(f"series_{status}", sum(r["status"] == status for r in rows))
    reporter.artefact("shard_table", folder / f"conversion{_suffix(shard, shards)}.csv")


def merge(params: dict[str, Any], ctx: StageContext, shards: int) -> None:
    """Merge the shards' tables into the split's ``conversion.csv`` and ``localizers_voxel.csv``."""
    from engine.data.convert import _clear_partial, _remove_orphans
    from engine.data.convert_tables import report, write_tables

    data = KaggleDataset.open(ctx.workspace.dataset(params["dataset"]), params["split"])
    out = ctx.workspace.converted(params["dataset"], params["split"])
    folder = out / SHARDS_DIR
    tables, voxels = [], []
    for k in range(shards):
        path = folder / f"conversion{_suffix(k, shards)}.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: shard {k} of {shards} has no outcome table; run its job first")
        tables.append(pd.read_csv(path, dtype=str, keep_default_na=False))
        voxels.append(pd.read_csv(folder / f"localizers_voxel{_suffix(k, shards)}.csv", dtype=str,
                                  keep_default_na=False))
    table = pd.concat(tables, ignore_index=True).sort_values("SeriesInstanceUID", kind="stable")
    uids = data.series_uids()
    covered = list(table["SeriesInstanceUID"])
    if sorted(covered) != uids:
        extra = sorted(set(covered) - set(uids))
        missing = sorted(set(uids) - set(covered))
        raise ValueError(f"the {shards} shard tables in {folder} do not match the series of {data.series_dir} "
                         f"({len(missing)} missing, e.g. {missing[:1]}; {len(extra)} extra or repeated, e.g. "
                         f"{extra[:1] or 'a repeated UID'}): rerun the sharded convert")
    points = pd.concat(voxels, ignore_index=True).sort_values("SeriesInstanceUID", kind="stable")
    rows, voxel_rows = table.to_dict("records"), points.to_dict("records")
    write_tables(out, rows, voxel_rows)
    _remove_orphans(out, uids)
    _clear_partial(out)
    ctx.reporter.log(f"merged {shards} shard tables: {len(rows)} series")
    report(out, rows, voxel_rows, data.read_localizers() is not None, ctx.reporter)
