"""The outcome tables of ``convert`` and what a finished conversion reports (log lines, metrics,
artefacts); shared by an unsharded run and the step that merges the tables of a sharded one.

The table layout (``TABLE_COLUMNS``, the statuses) is defined in :mod:`engine.data.convert`, which
imports this module, hence the imports inside the functions.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from engine.data.localizers import VOXEL_COLUMNS


def summarise(rows: list[dict[str, Any]]) -> list[str]:
    """Log lines: counts per status and fallback, then the first failure reasons."""
    from engine.data.convert import FAILED, STATUSES

    counts = Counter(r["status"] for r in rows)
    lines = [f"{len(rows)} series: " + ", ".join(f"{s} {counts.get(s, 0)}" for s in STATUSES)]
    fallbacks = Counter(f.split(":")[0] for r in rows for f in str(r["fallback"]).split("+") if f)
    if fallbacks:
        lines.append("fallbacks: " + ", ".join(f"{name} {n}" for name, n in sorted(fallbacks.items())))
    failed = [r for r in rows if r["status"] == FAILED]
    lines += [f"failed {r['SeriesInstanceUID']}: {r['reason']}" for r in failed[:5]]
    if len(failed) > 5:
        lines.append(f"... and {len(failed) - 5} more failures: see conversion.csv")
    issues = [r for r in rows if r["localizer_issues"]]
    lines += [f"localizer issue {r['SeriesInstanceUID']}: {r['localizer_issues']}" for r in issues[:5]]
    gapped = [r for r in rows if r["slice_gap"]]
    lines += [f"slice gap {r['SeriesInstanceUID']}: {r['slice_gap']}" for r in gapped[:5]]
    if len(gapped) > 5:
        lines.append(f"... and {len(gapped) - 5} more series with a large slice gap: see conversion.csv")
    return lines



def write_tables(out: Path, rows: list[dict[str, Any]], voxel_rows: list[dict[str, Any]], suffix: str = "") -> None:
    """``conversion<suffix>.csv`` and ``localizers_voxel<suffix>.csv`` in ``out``."""
    from engine.data.convert import TABLE_COLUMNS, write_csv

    write_csv(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)), out / f"conversion{suffix}.csv")
    write_csv(pd.DataFrame(voxel_rows, columns=list(VOXEL_COLUMNS)), out / f"localizers_voxel{suffix}.csv")


def report(out: Path, rows: list[dict[str, Any]], voxel_rows: list[dict[str, Any]], has_points: bool,
           reporter: Any) -> None:
    """Summary lines, counts as metrics and the artefacts of a finished conversion."""
    from engine.data.convert import STATUSES

    for line in summarise(rows):
        reporter.log(line)
    counts = Counter(r["status"] for r in rows)
    for status in STATUSES:
        reporter.metric(f"series_{status}", counts.get(status, 0))
    reporter.metric("series_slice_gap", sum(bool(r["slice_gap"]) for r in rows))
    reporter.metric("localizers_placed", len(voxel_rows))
    reporter.artefact("conversion_table", out / "conversion.csv")
    reporter.artefact("images", out / "images")
    reporter.artefact("localizers", out / "localizers_voxel.csv")
    if has_points:
        reporter.artefact("masks", out / "masks")
    if any(str(r["vessels"]).startswith("written") for r in rows):
        reporter.artefact("vessels", out / "vessels")
