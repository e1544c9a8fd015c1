"""Fusion of per-slice predictions into the MODEL_SPEC 3 box, on hand-made 2D predictions."""
from __future__ import annotations

import numpy as np

from engine.stage1.fusion import Box3D, SliceBox, fuse
from engine.stage1.slices import box_of, inference_positions

SHAPE = (40, 50, 60)  # (z, y, x)


def rect(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return mask


def boxes_from(predictions: list[tuple[int, int, np.ndarray]]) -> list[SliceBox]:
    """SliceBoxes of (axis, position, 2D prediction); slices without foreground are dropped."""
    found = [SliceBox.from_mask(axis, position, mask) for axis, position, mask in predictions]
    return [b for b in found if b is not None]


def test_inference_positions_are_quarter_half_three_quarters() -> None:
    assert inference_positions(40) == [10, 20, 30]
    assert inference_positions(3) == [0, 1, 2]
    assert inference_positions(1) == [0]


def test_slice_box_is_half_open_extent_of_foreground() -> None:
    mask = np.zeros((50, 60), dtype=np.uint8)
    mask[12, 7] = mask[30, 44] = 1
    assert SliceBox.from_mask(0, 20, mask) == SliceBox(0, 20, (12, 31), (7, 45))
    assert SliceBox.from_mask(0, 20, np.zeros((50, 60))) is None
    assert box_of(np.zeros((3, 3))) is None


def test_disagreeing_slices_are_averaged_per_axis_with_int_truncation() -> None:
    predictions = [
        # axial slices (z fixed) measure y (rows) and x (cols)
        (0, 10, rect((50, 60), (10, 30), (20, 41))),
        (0, 20, rect((50, 60), (11, 33), (21, 40))),
        (0, 30, np.zeros((50, 60))),  # no foreground: contributes nothing
        # coronal slices (y fixed) measure z (rows) and x (cols)
        (1, 25, rect((40, 60), (5, 25), (22, 44))),
        # sagittal slices (x fixed) measure z (rows) and y (cols)
        (2, 30, rect((40, 50), (6, 27), (12, 31))),
        (2, 45, rect((40, 50), (8, 26), (13, 30))),
    ]
    box = fuse(SHAPE, boxes_from(predictions))
    # z: starts 5, 6, 8 -> int(6.33) = 6; ends 25, 27, 26 -> 26
    # y: starts 10, 11, 12, 13 -> int(11.5) = 11; ends 30, 33, 31, 30 -> int(31.0) = 31
    # x: starts 20, 21, 22 -> 21; ends 41, 40, 44 -> int(41.67) = 41
    assert box == Box3D((6, 26), (11, 31), (21, 41), "")


def test_no_foreground_anywhere_gives_the_whole_volume() -> None:
    predictions = [(axis, p, np.zeros((8, 8))) for axis in range(3) for p in (1, 2, 3)]
    assert fuse(SHAPE, boxes_from(predictions)) == Box3D((0, 40), (0, 50), (0, 60), "no_foreground")
    assert fuse(SHAPE, []) == Box3D((0, 40), (0, 50), (0, 60), "no_foreground")


def test_axis_without_a_contributing_slice_gets_its_full_range() -> None:
    # only axial slices have foreground: y and x are measured, z by nobody
    predictions = [
        (0, 10, rect((50, 60), (10, 20), (30, 40))),
        (0, 20, rect((50, 60), (12, 22), (30, 42))),
        (1, 25, np.zeros((40, 60))),
        (2, 30, np.zeros((40, 50))),
    ]
    assert fuse(SHAPE, boxes_from(predictions)) == Box3D((0, 40), (11, 21), (30, 41), "full_range:z")
    # only one sagittal slice: z and y measured, x is not
    only_sagittal = [(2, 30, rect((40, 50), (3, 9), (4, 7)))]
    assert fuse(SHAPE, boxes_from(only_sagittal)) == Box3D((3, 9), (4, 7), (0, 60), "full_range:x")


def test_margin_grows_the_box_and_is_clipped_to_the_volume() -> None:
    predictions = [(0, 10, rect((50, 60), (2, 20), (30, 58))), (1, 25, rect((40, 60), (1, 39), (30, 58)))]
    assert fuse(SHAPE, boxes_from(predictions), margin=3) == Box3D((0, 40), (0, 23), (27, 60), "")


def test_box_contains_uses_half_open_ranges() -> None:
    box = Box3D((2, 5), (0, 3), (1, 4))
    assert box.contains(2, 0, 1) and box.contains(4.9, 2, 3)
    assert not box.contains(5, 1, 1) and not box.contains(3, 1, 0.5)
