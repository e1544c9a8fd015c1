"""Stage-2 targets: the 26-class volume, the two decoder targets, the left/right swap, the CSV
targets and the oversampling weights, on hand-made volumes and a real Circle-of-Willis label crop."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from engine.labels import LOCATIONS, aneurysm_label
from engine.stage2.targets import (
    DECODER1_LR_SWAP,
    DECODER2_LR_SWAP,
    IGNORE,
    LABEL_LR_SWAP,
    NOT_ANEURYSM,
    UNKNOWN_VESSEL,
    aneurysm_mask,
    case_sampling_weights,
    classification_targets,
    combine_labels,
    decoder1_target,
    decoder2_target,
    swap_locations,
)

# MODEL_SPEC 4, written out by hand: vessel v pairs with aneurysm label a.
SPEC_PAIRS = {1: 26, 2: 25, 3: 24, 4: 23, 5: 15, 6: 14, 7: 17, 8: 16, 9: 19, 10: 18, 11: 22, 12: 21, 13: 20}
# TopCoW 2024 labels -> competition vessel labels (approximate: TopCoW does not split the ICA).
TOPCOW_TO_VESSEL = {1: 2, 2: 1, 3: 1, 4: 7, 5: 9, 6: 8, 7: 10, 8: 3, 9: 4, 10: 13, 11: 11, 12: 12, 15: 13}


def test_combine_labels_aneurysm_overwrites_vessel():
    vessels = np.array([[0, 3, 6], [13, 6, 0]], dtype=np.uint8)
    boxes = np.array([[0, 0, 14], [0, 0, 20]], dtype=np.uint8)
    assert combine_labels(vessels, boxes).tolist() == [[0, 3, 14], [13, 6, 20]]
    assert combine_labels(vessels, boxes).dtype == np.uint8
    # No vessel mask: everything that is not an aneurysm is "unknown vessel or background".
    assert combine_labels(None, boxes).tolist() == [[27, 27, 14], [27, 27, 20]]
    with pytest.raises(ValueError, match="aneurysm mask"):
        combine_labels(vessels, np.array([[0, 5, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        combine_labels(vessels, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="vessel mask"):
        combine_labels(np.full((2, 3), 14), boxes)


def test_decoder_targets_follow_the_spec_pairs():
    labels = torch.tensor([0, *range(1, 14), *range(14, 27), UNKNOWN_VESSEL])
    t1 = decoder1_target(labels)
    assert t1.tolist() == [0, *range(1, 14), *[14] * 13, NOT_ANEURYSM]
    t2 = decoder2_target(labels)
    expected2 = {0: 0, UNKNOWN_VESSEL: IGNORE}
    for vessel, aneurysm in SPEC_PAIRS.items():
        expected2[vessel] = vessel
        expected2[aneurysm] = vessel
    assert t2.tolist() == [expected2[v] for v in labels.tolist()]
    assert aneurysm_mask(labels).tolist() == [False] * 14 + [True] * 13 + [False]
    # nnU-Net hands targets over as float (B, 1, ...) tensors; shape and dtype of the input do not matter.
    volume = torch.tensor([[[[0.0, 26.0], [4.0, 27.0]]]])
    assert decoder2_target(volume).tolist() == [[[[0, 1], [4, IGNORE]]]]
    assert decoder1_target(volume).dtype == torch.long
    with pytest.raises(ValueError, match="outside 0..27"):
        decoder1_target(torch.tensor([0, 28]))


def test_location_swap():
    logits = torch.arange(13.0).repeat(2, 1)
    assert swap_locations(logits)[0].tolist() == [1, 0, 3, 2, 5, 4, 6, 8, 7, 10, 9, 11, 12]
    assert torch.equal(swap_locations(swap_locations(logits)), logits)
    columns = np.arange(26).reshape(13, 2)
    assert swap_locations(columns, dim=0)[:, 0].tolist() == [2, 0, 6, 4, 10, 8, 12, 16, 14, 20, 18, 22, 24]
    with pytest.raises(ValueError, match="13 locations"):
        swap_locations(torch.zeros(2, 14))
    # The swap pairs left and right columns by name.
    for k, name in enumerate(LOCATIONS):
        mirrored = LOCATIONS[[1, 0, 3, 2, 5, 4, 6, 8, 7, 10, 9, 11, 12][k]]
        assert mirrored == name.replace("Left", "#").replace("Right", "Left").replace("#", "Right")


def test_label_and_channel_swaps_by_hand():
    # Vessels: 3 R PComm <-> 4 L PComm, 5 <-> 6, 7 <-> 8, 9 <-> 10, 11 <-> 12; 1, 2, 13 stay.
    assert DECODER1_LR_SWAP == (0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 13, 14)
    assert DECODER2_LR_SWAP == (0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 13)
    assert LABEL_LR_SWAP[14:] == (15, 14, 17, 16, 19, 18, 20, 22, 21, 24, 23, 25, 26, 27)


def _real_labels(shared_data) -> np.ndarray:
    path = shared_data / "TopCoW_Eval_Metrics/test_assets/seg_metrics/topcow_roi/topcow_ct_roi_003.nii.gz"
    image = nib.load(path)
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")  # array axis 0 runs right -> left
    topcow = np.asarray(image.dataobj)
    vessels = np.zeros(topcow.shape, np.uint8)
    for source, target in TOPCOW_TO_VESSEL.items():
        vessels[topcow == source] = target
    return vessels


def _centre_x(volume: np.ndarray, label: int) -> float:
    return float(np.nonzero(volume == label)[0].mean())


def test_left_right_swap_on_a_real_circle_of_willis(shared_data):
    vessels = _real_labels(shared_data)
    # An aneurysm box on the right MCA (vessel 9 -> location "Right Middle Cerebral Artery").
    x, y, z = (int(c[len(c) // 2]) for c in np.nonzero(vessels == 9))
    boxes = np.zeros_like(vessels)
    boxes[x - 2 : x + 3, y - 2 : y + 3, z - 1 : z + 2] = aneurysm_label("Right Middle Cerebral Artery")
    labels = combine_labels(vessels, boxes)
    assert (labels[boxes > 0] == 19).all() and (labels[boxes == 0] == vessels[boxes == 0]).all()
    # Anatomy: in LPS arrays right-sided structures sit at smaller x.
    assert _centre_x(labels, 9) < _centre_x(labels, 10)
    assert _centre_x(labels, 7) < _centre_x(labels, 8)

    # Flip left-right and relabel with the swap: still anatomically consistent.
    flipped = np.asarray(LABEL_LR_SWAP, dtype=np.uint8)[labels[::-1]]
    assert _centre_x(flipped, 9) < _centre_x(flipped, 10)
    assert _centre_x(flipped, 7) < _centre_x(flipped, 8)
    assert set(np.unique(flipped[::-1][boxes > 0]).tolist()) == {aneurysm_label("Left Middle Cerebral Artery")}

    # Decoder targets of the swapped labels = channel-swapped decoder targets of the originals.
    t = torch.from_numpy(labels.copy())
    swapped = torch.from_numpy(np.ascontiguousarray(np.asarray(LABEL_LR_SWAP, np.uint8)[labels]))
    assert torch.equal(decoder1_target(swapped), torch.tensor(DECODER1_LR_SWAP)[decoder1_target(t)])
    assert torch.equal(decoder2_target(swapped), torch.tensor(DECODER2_LR_SWAP)[decoder2_target(t)])
    # Decoder 2 unites the aneurysm with its vessel: the box is right-MCA territory.
    assert (decoder2_target(t)[torch.from_numpy(boxes > 0)] == 9).all()


def test_classification_targets_from_a_csv_row():
    row = {"SeriesInstanceUID": "1.2.3", "Modality": "MRI T2", "Aneurysm Present": 1,
           **{c: 0 for c in LOCATIONS}, "Basilar Tip": 1}
    targets = classification_targets(row)
    assert targets.present == 1.0
    assert targets.modality == 2
    assert targets.locations.tolist() == [0.0] * 11 + [1.0, 0.0]
    with pytest.raises(ValueError, match="1.2.3.*PET"):
        classification_targets({**row, "Modality": "PET"})


def test_case_sampling_weights_by_hand():
    locations = np.zeros((5, 13))
    locations[0, 0] = 1
    locations[1, [0, 6]] = 1
    locations[3, 6] = 1
    locations[4, 6] = 1
    # n_0 = 2, n_6 = 3: 300/2 = 150, 300/3 = 100.
    weights = case_sampling_weights(locations)
    np.testing.assert_allclose(weights, [151.0, 1 + (150 + 100) / 2, 1.0, 101.0, 101.0])
    with pytest.raises(ValueError, match="13"):
        case_sampling_weights(np.zeros((3, 12)))
