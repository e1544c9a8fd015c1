"""Stage-1 coverage on series the 2D model never saw: the check that says whether its boxes generalise.

The ``roi`` stage reports the fraction of localizer points inside their series' box for the series it
cropped, but on the training split that includes the series the 2D model was trained on (those with
a vessel segmentation), and the held-out split has no localizers at all (its truth stays hidden from
every stage). This module scores the boxes afterwards, as an evaluation, on two groups of series:

* ``test``: the held-out split, whose aneurysm centres come from the demo cohort's ``aneurysms.csv``
  (LPS mm, written by the generator), against the boxes ``predict`` used (its review ``case.json``);
* ``train_unseen``: training series without a vessel segmentation (``stage1-data`` builds the 2D
  dataset from the others only), with the voxel points of ``localizers_voxel.csv``.

A point counts as covered when its voxel lies inside the half-open box. Nothing here
feeds back into training.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import json

import numpy as np
import pandas as pd

from engine.context import WorkspaceLayout

KEY = "SeriesInstanceUID"


@dataclass(frozen=True)
class Coverage:
    """Points inside their series' box, out of the points of the series that have a box."""

    inside: int
    points: int
    series: int

    @property
    def fraction(self) -> float | None:
        return self.inside / self.points if self.points else None


def _boxes(rois_csv: Path) -> pd.DataFrame:
    if not rois_csv.is_file():
        raise FileNotFoundError(f"{rois_csv} does not exist; run the roi stage for this split first")
    return pd.read_csv(rois_csv, dtype={KEY: str}).set_index(KEY)


def _inside(box: pd.Series, i: float, j: float, k: float) -> bool:
    """Voxel (i, j, k) of the NIfTI array (x, y, z) inside the (z, y, x) half-open box of rois.csv."""
    return bool(box.z0 <= k < box.z1 and box.y0 <= j < box.y1 and box.x0 <= i < box.x1)


def held_out_coverage(cases: Path, truth_csv: Path) -> Coverage:
    """Coverage of the held-out aneurysm centres (``aneurysms.csv``, split ``test``) by the boxes that
    ``predict`` used: ``cases/<uid>/case.json`` of its review folder (box on the (z, y, x) array and the
    volume's LPS affine, which maps (x, y, z) voxel indices to LPS mm)."""
    if not truth_csv.is_file():
        raise FileNotFoundError(f"{truth_csv} does not exist: held-out coverage needs a demo cohort's truth")
    truth = pd.read_csv(truth_csv, dtype={KEY: str})
    truth = truth[truth["split"] == "test"]
    inside = points = 0
    series = set()
    for uid, sacs in truth.groupby(KEY):
        case_file = cases / uid / "case.json"
        if not case_file.is_file():
            continue
        case = json.loads(case_file.read_text())
        box = case.get("box")
        if not box or case.get("affine_lps") is None:
            continue
        affine = np.asarray(case["affine_lps"], dtype=float)
        lps = np.c_[sacs[["x_mm", "y_mm", "z_mm"]].to_numpy(float), np.ones(len(sacs))]
        for i, j, k in np.rint((np.linalg.inv(affine) @ lps.T).T[:, :3]):
            inside += bool(box["z0"] <= k < box["z1"] and box["y0"] <= j < box["y1"] and box["x0"] <= i < box["x1"])
            points += 1
        series.add(uid)
    return Coverage(inside, points, len(series))


def unseen_train_coverage(workspace: WorkspaceLayout, dataset: str) -> Coverage:
    """Coverage of the localizer points of training series without a vessel segmentation."""
    converted = workspace.converted(dataset, "train")
    localizers = converted / "localizers_voxel.csv"
    if not localizers.is_file():
        raise FileNotFoundError(f"{localizers} does not exist; run convert for {dataset} / train first")
    points_table = pd.read_csv(localizers, dtype={KEY: str}).dropna(subset=["i", "j", "k"])
    boxes = _boxes(workspace.rois(dataset, "train") / "rois.csv")
    seen = {p.name.removesuffix(".nii.gz") for p in (converted / "vessels").glob("*.nii.gz")}
    inside = points = 0
    series = set()
    for row in points_table.itertuples(index=False):
        uid = getattr(row, KEY)
        if uid in seen or uid not in boxes.index:
            continue
        inside += _inside(boxes.loc[uid], row.i, row.j, row.k)
        points += 1
        series.add(uid)
    return Coverage(inside, points, len(series))
