"""Benchmark of the review screen's case view on the real 512 x 512 x 120 MR (``niivue-demo-images/dicom``).

Setup (not timed): the series goes through predict's own code, ``Predictor.predict_series`` with
review files on (``engine.inference.synthetic`` models: the threshold stage-1 net and a random
stage-2 net at 112^3, the size of a 224^3 model's saved maps), then ``write_case`` and
``write_review_extras``: ``case.json``, ``volume.nii`` (the converted volume), ``seg1`` / ``seg2``.

Timed, as the screen does it at 120 x 40 (enlarged plane 78 x 25 cells, the two small ones 38 x 11):

* **open**: ``load_case`` (memory-mapped volume, both maps, points) + ``Viewer`` (window presets from
  the volume's percentiles) + the three planes drawn (picture + half-block cells). Target <= 1 s.
* **scroll**: one slice of the enlarged axial plane, redrawn as ``CaseScreen`` does (only that view:
  the others cut the cursor along other axes and do not change). Target <= 50 ms. Also a coronal
  scroll (strided reads of the memory map) and, for scale, all three planes redrawn.

Baseline measured in the same run: reading the same volume from a gzip NIfTI (``volume.nii.gz``, what
a compressed review file would cost on every open) with nibabel.

    .venv/bin/python bench/bench_review.py              # 5 opens, 20 scrolls
    .venv/bin/python bench/bench_review.py --repeat 10
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("RSNA_TUI_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_MR = SHARED / "niivue-demo-images" / "dicom"
MAIN_CELLS, SMALL_CELLS = (78, 25), (38, 11)


def build_case(root: Path, size: int) -> Path:
    """The MR's review folder, written by predict's own functions."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(name, str(root / name))
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    from engine.inference.predictor import Predictor
    from engine.inference.review import write_case
    from engine.inference.review_extras import write_review_extras
    from engine.inference.synthetic import write_stage2_model, write_threshold_stage1_model

    stage1 = write_threshold_stage1_model(root / "s1", patch=(64, 64), spacing=(3.0, 3.0), features=(8, 16, 32))
    stage2 = write_stage2_model(root / "s2", [4, 8, 16, 32], [1, 1, 1, 1], size)
    predictor = Predictor(stage1, [stage2], tta=1, device="cpu", segmentations=True, keep_volume=True)
    started = time.perf_counter()
    prediction = predictor.predict_series(REAL_MR, "niivue-mr")
    if prediction.status != "ok":
        raise SystemExit(f"prediction failed: {prediction.reason}")
    folder = root / "cases" / "niivue-mr"
    write_case(folder, prediction)
    write_review_extras(folder, prediction, REAL_MR, [])
    print(f"setup: predicted and wrote the review files in {time.perf_counter() - started:.1f} s "
          f"(shape z, y, x {prediction.shape}, box {prediction.boxes[0].ranges})")
    return folder


def draw(viewer, planes: list[tuple[str, tuple[int, int]]]) -> None:  # type: ignore[no-untyped-def]
    from rsna_tui.app.widgets.slice_view import half_block_rows

    for plane, (width, height) in planes:
        half_block_rows(viewer.picture(plane, width - 2, 2 * (height - 2)).rgb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="case opens to time")
    parser.add_argument("--scrolls", type=int, default=20, help="slice scrolls to time")
    parser.add_argument("--size", type=int, default=112, help="edge of the stage-2 grid (= saved maps)")
    args = parser.parse_args()
    if not REAL_MR.is_dir():
        raise SystemExit(f"real MR not found at {REAL_MR} (set RSNA_TUI_SHARED_DATA)")
    import nibabel as nib
    import numpy as np

    from rsna_tui.review.viewer import Viewer
    from rsna_tui.review.volume import load_case

    planes = [("axial", MAIN_CELLS), ("coronal", SMALL_CELLS), ("sagittal", SMALL_CELLS)]
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        folder = build_case(Path(tmp), args.size)
        opens = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            viewer = Viewer(load_case(folder), "MRI T1post")
            draw(viewer, planes)
            opens.append(time.perf_counter() - started)
        case = viewer.case
        print(f"volume {case.shape} (i, j, k) {case.volume.dtype}, maps {[m[0].shape for m in case.maps.values()]}")
        scrolls, coronal, three = [], [], []
        for n in range(args.scrolls):
            started = time.perf_counter()
            viewer.scroll(1 if n % 2 == 0 else -1, "axial")
            draw(viewer, planes[:1])
            scrolls.append(time.perf_counter() - started)
            started = time.perf_counter()
            draw(viewer, planes)
            three.append(time.perf_counter() - started)
            started = time.perf_counter()
            viewer.scroll(1 if n % 2 == 0 else -1, "coronal")
            draw(viewer, planes[1:2])
            coronal.append(time.perf_counter() - started)
        started = time.perf_counter()
        viewer.picture("axial", 640, 640)
        png_draw = time.perf_counter() - started

        gz = Path(tmp) / "volume.nii.gz"
        nib.save(nib.load(folder / "volume.nii"), gz)
        started = time.perf_counter()
        np.asarray(nib.load(gz).dataobj)
        baseline = time.perf_counter() - started

    def ms(values: list[float]) -> str:
        return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"

    print(f"open a case (load volume + maps, three planes drawn): {ms(opens)} over {len(opens)} (target <= 1000 ms)")
    print(f"scroll one axial slice (enlarged plane redrawn):      {ms(scrolls)} over {len(scrolls)} (target <= 50 ms)")
    print(f"scroll one coronal slice (that plane redrawn):        {ms(coronal)} over {len(coronal)}")
    print(f"all three planes redrawn (a window or overlay key):   {ms(three)} over {len(three)}")
    print(f"one axial plane at PNG size 640 x 640:                {png_draw * 1000:.1f} ms")
    print(f"baseline: reading the same volume from .nii.gz:       {baseline * 1000:.1f} ms")


if __name__ == "__main__":
    main()
