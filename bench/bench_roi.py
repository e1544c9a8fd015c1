"""Benchmark of stage-1 ``roi`` against a 3D sliding-window prediction of the same volume, in one run.

Input: the real 512 x 512 x 120 brain MR of ../shared/data (niivue-demo-images/dicom), converted with
dicom2nifti and reoriented to LPS with nibabel, as ``convert`` does.

Contenders, both nnU-Net ``PlainConvUNet``s of the same width (``--features`` per stage, untrained:
the time does not depend on the weights) driven by ``nnUNetPredictor`` (step 0.5, Gaussian, no mirroring):
  roi   ``VesselBoxModel.box``: the nine slices, z-score, resampling to ``--spacing`` mm, 2D sliding
        window with a ``--patch2d`` patch, resampling back, argmax, fusion (the stage's own code)
  3d    z-score of the whole volume, 3D sliding window with a ``--patch3d`` patch at its own spacing,
        argmax: what it costs to look at the whole volume without stage 1
One warm-up pass of each network first (allocation, cuDNN autotuning), then one timed run each.
Prints ms per series and the ratio roi / 3d (target <= 0.1).

    .venv/bin/python bench/bench_roi.py [--device auto] [--features 32,64,128,256,512,512]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("nnUNet_def_n_proc", "1")
os.environ.setdefault("nnUNet_n_proc_DA", "0")

SHARED = Path(os.environ.get("RSNA_TUI_SHARED_DATA", REPO.parent / "shared" / "data"))


def configuration(patch: list[int], spacing: list[float], features: list[int]) -> dict:
    """An nnU-Net plans configuration of a PlainConvUNet (2D or 3D by the patch's length)."""
    dims = len(patch)
    conv = "torch.nn.modules.conv.Conv2d" if dims == 2 else "torch.nn.modules.conv.Conv3d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{dims}d"
    n = len(features)
    return {
        "data_identifier": f"bench_{dims}d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": patch, "median_image_size_in_voxels": patch, "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": n, "features_per_stage": features, "conv_op": conv,
                "kernel_sizes": [[3] * dims] * n, "strides": [[1] * dims] + [[2] * dims] * (n - 1),
                "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
                "norm_op": norm, "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": True,
    }


def predictor_for(config_name: str, plans: dict, dataset_json: dict, device):
    """An nnUNetPredictor with a freshly initialised network of one configuration."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    config = manager.get_configuration(config_name)
    network = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                     config.network_arch_init_kwargs_req_import, 1, 2, allow_init=True,
                                     deep_supervision=False).to(device).eval()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, device=device,
                                allow_tqdm=False)
    predictor.manual_initialization(network, manager, config, [network.state_dict()], dataset_json,
                                    "nnUNetTrainer", None)
    return predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--features", default="32,64,128,256,512,512", help="features per stage of both networks")
    parser.add_argument("--patch2d", default="384,384")
    parser.add_argument("--patch3d", default="128,128,128")
    parser.add_argument("--spacing", default="0.55,0.5", help="stage-1 in-plane spacing in mm (full profile)")
    args = parser.parse_args()

    import dicom2nifti
    import nibabel as nib
    import numpy as np
    import torch

    from engine.nnunet_runtime import select_device
    from engine.stage1.roi import VesselBoxModel
    from engine.stage1.slices import read_volume

    device = select_device(args.device)
    features = [int(f) for f in args.features.split(",")]
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731

    with tempfile.TemporaryDirectory() as tmp:
        nifti = Path(tmp) / "mr.nii.gz"
        dicom2nifti.dicom_series_to_nifti(str(SHARED / "niivue-demo-images" / "dicom"), str(nifti), reorient_nifti=False)
        img = nib.load(str(nifti))
        ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                               nib.orientations.axcodes2ornt(("L", "P", "S")))
        nib.save(img.as_reoriented(ornt), str(nifti))
        volume, spacing = read_volume(nifti)

    plans = {
        "dataset_name": "Dataset999_Bench", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1, 1],
        "original_median_shape_after_transp": list(volume.shape), "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "bench",
        "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
        "configurations": {
            "2d": configuration(ints(args.patch2d), [float(s) for s in args.spacing.split(",")], features),
            "3d_fullres": configuration(ints(args.patch3d), [float(s) for s in spacing], features),
        },
    }
    dataset_json = {"channel_names": {"0": "zscore"}, "labels": {"background": 0, "vessel_box": 1},
                    "numTraining": 1, "file_ending": ".nii.gz"}
    roi_model = VesselBoxModel(predictor_for("2d", plans, dataset_json, device))
    predictor3d = predictor_for("3d_fullres", plans, dataset_json, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def roi_once() -> object:
        return roi_model.box(volume, spacing)

    def full3d_once() -> object:
        data = torch.from_numpy((volume - volume.mean()) / max(float(volume.std()), 1e-8))[None]
        return predictor3d.predict_sliding_window_return_logits(data).argmax(0)

    with torch.no_grad():
        # warm-up: one patch of each network
        roi_model.predictor.network(torch.zeros((1, 1, *ints(args.patch2d)), device=device))
        predictor3d.network(torch.zeros((1, 1, *ints(args.patch3d)), device=device))
        timings = {}
        for name, fn in (("roi", roi_once), ("3d", full3d_once)):
            sync()
            started = time.perf_counter()
            result = fn()
            sync()
            timings[name] = (time.perf_counter() - started) * 1000
            print(f"{name:4s} {timings[name]:10.1f} ms per series   ({result if name == 'roi' else tuple(result.shape)})",
                  flush=True)

    print(f"volume (z, y, x) {volume.shape}, spacing {np.round(spacing, 3).tolist()} mm; device {device} "
          f"({torch.get_num_threads()} CPU threads); features {features}; patches 2d {args.patch2d}, 3d {args.patch3d}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"ratio roi / 3d = {timings['roi'] / timings['3d']:.4f} (target <= 0.1)")


if __name__ == "__main__":
    main()
