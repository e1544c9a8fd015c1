"""What the stage-2 trainer feeds the network: whole centred volumes, the ``mirror`` augmentation, bf16 autocast.

The whole-volume check runs on the stage-2 fixture's preprocessed dataset (``tests/engine/conftest.py``);
the other two need no trained model.
"""
from __future__ import annotations

import json

import numpy as np
import torch


def test_every_training_draw_is_the_whole_centred_volume(stage2_trained: dict) -> None:
    """The loader with the trainer's initial patch (bigger than the volume, for rotations) and nnU-Net's spatial
    transform at rest gives back each case's volume and labels exactly, for cases with an ignore label (no
    vessel mask) too. nnU-Net's own loader centres those on a random annotated voxel (for a positive without
    vessel mask, its sac): the volume shifts."""
    from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from engine.stage2.trainer import WholeVolumeDataLoader

    folder = stage2_trained["root"] / "nnUNet_preprocessed" / "Dataset201_Stage2Cube"
    plans = PlansManager(json.loads((folder / "Stage2Plans.json").read_text()))
    labels = plans.get_label_manager(json.loads((folder / "dataset.json").read_text()))
    assert labels.has_ignore_label
    data = folder / "Stage2Plans_3d_fullres"
    cases = sorted(p.name[:-5] for p in data.glob("*.b2nd") if not p.name.endswith("_seg.b2nd"))
    dataset = infer_dataset_class(str(data))(str(data), cases)
    patch, initial = [16] * 3, [25] * 3  # 25: nnU-Net's initial patch for 16^3 with its rotation range
    spatial = SpatialTransform(patch, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
                               p_rotation=0, p_scaling=0, border_mode_seg="constant", padding_value_seg=-1)

    def draws(loader_class) -> list[bool]:
        loader = loader_class(dataset, 1, initial, patch, labels, oversample_foreground_percent=0.0,
                              transforms=spatial)
        same = []
        for case in cases:
            image, seg, _, properties = dataset.load_case(case)
            for _ in range(3):
                lower, upper = loader.get_bbox(image.shape[1:], False, properties["class_locations"])
                box = [[lo, hi] for lo, hi in zip(lower, upper)]
                drawn = spatial(image=torch.from_numpy(crop_and_pad_nd(np.asarray(image[:]), box, 0)).float(),
                                segmentation=torch.from_numpy(crop_and_pad_nd(np.asarray(seg[:]), box, -1)))
                same.append(np.array_equal(drawn["image"].numpy(), np.asarray(image[:], dtype=np.float32))
                            and np.array_equal(drawn["segmentation"].numpy(), np.asarray(seg[:])))
        return same

    assert all(draws(WholeVolumeDataLoader))
    assert not all(draws(nnUNetDataLoader))


def test_mirror_augmentation_keeps_only_nnunets_mirroring() -> None:
    """``augmentation = "mirror"``: every draw is the centred volume or its mirror on array axes 0 / 1, labels
    alike; nnU-Net's full pipeline (the default) changes intensities as well."""
    from engine.stage2.trainer import StageTwoTrainer

    trainer = object.__new__(StageTwoTrainer)  # the transforms need no initialised trainer
    generator = torch.Generator().manual_seed(0)
    image = torch.randn((1, 25, 25, 25), generator=generator)
    seg = torch.randint(0, 14, (1, 25, 25, 25), generator=generator, dtype=torch.int16)
    centre = (slice(None),) + (slice(4, 20),) * 3
    views = [(), (0,), (1,), (0, 1)]

    def draws(mode: str) -> list[bool]:
        trainer.augmentation = mode
        transforms = trainer.get_training_transforms([16] * 3, (-0.5, 0.5), [[1, 1, 1], [0.5, 0.5, 0.5]], (0, 1), False)
        mirrored = []
        for _ in range(20):
            out = transforms(image=image.clone(), segmentation=seg.clone())
            assert out["image"].shape == (1, 16, 16, 16) and [s.shape[1:] for s in out["segmentation"]] == [(16,) * 3, (8,) * 3]
            mirrored.append(any(torch.equal(out["image"], image[centre].flip([a + 1 for a in axes]))
                                and torch.equal(out["segmentation"][0], seg[centre].flip([a + 1 for a in axes]))
                                for axes in views))
        return mirrored

    assert all(draws("mirror"))
    assert not all(draws("nnunet"))


def test_bf16_precision_context_on_a_cpu() -> None:
    """``cpu_precision = "bf16"``: convolutions under bfloat16 autocast on a CPU; fp32: none."""
    from engine.stage2.trainer import StageTwoTrainer

    trainer = object.__new__(StageTwoTrainer)
    trainer.device = torch.device("cpu")
    conv, x = torch.nn.Conv3d(1, 2, 3), torch.randn(1, 1, 6, 6, 6)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        trainer.cpu_precision = precision
        with trainer.precision_context():
            assert conv(x).dtype == dtype
