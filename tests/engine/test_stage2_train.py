"""Stage 2 end to end on the demo cohort: dataset, tiny train3d -> finetune1 / finetune2, cancel and resume.

demo_cohort -> convert -> crops in the ``rois`` layout -> the stage-2 nnU-Net dataset -> training jobs.
The crops are written by stage 1's own crop writer with the box of the vessel and aneurysm masks standing
in for the stage-1 model (``tests/engine/stage2_jobs.py``, the one place that sets up the stages' inputs).
Every training stage is a job of the real CLI and runner (``rsna-tui run --follow``): its own process
group, ``spec.json`` + ``events.jsonl`` + ``log.txt`` in the job folder. Sizes are cut to 16^3 with
4-8-16 features to keep the module within about two minutes on a busy 2-core machine; the code path is
the ``tiny`` profile's. How long the trainings take is a benchmark (``bench/bench_stage2_train.py``).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from engine.labels import LABEL_COLUMNS, LOCATIONS, MODALITY_INDEX
from engine.nnunet_runtime import read_checkpoint
from engine.stage2 import dataset as stage2_dataset
from engine.stage2.losses import StageTwoLoss
from engine.stage2.model_files import build_network, load_network, network_spec, read_network_json
from engine.stage2.targets import UNKNOWN_VESSEL, case_sampling_weights
from engine.stages import get_stage
from tests.engine.stage2_jobs import REPO, SMALL, cli_env, job_events, job_log, rsna_tui, set_options


def metrics(found: list[dict], name: str) -> list[tuple[int, float]]:
    return [(e["step"], e["value"]) for e in found if e["type"] == "metric" and e["name"] == name]


def artefacts(found: list[dict]) -> dict[str, str]:
    return {e["name"]: e["path"] for e in found if e["type"] == "artefact"}


def logs(found: list[dict]) -> list[str]:
    return [e["message"] for e in found if e["type"] == "log"]


@pytest.fixture(scope="module")
def trained(stage2_trained: dict) -> dict:
    """demo -> convert -> crops -> train3d -> finetune1 -> finetune2 (``tests/engine/conftest.py``)."""
    return stage2_trained


# ---- dataset ---------------------------------------------------------------------------------------

def test_prepare_image_zscores_the_crop_then_resizes_like_inference() -> None:
    crop = np.random.default_rng(0).normal(300, 40, (10, 14, 12)).astype(np.float32)
    out = stage2_dataset.prepare_image(crop, 16)
    assert out.shape == (16, 16, 16) and out.dtype == np.float32
    z = (crop - crop.mean()) / crop.std()
    # align_corners=True keeps the corner voxels exactly
    assert np.allclose(out[0, 0, 0], z[0, 0, 0], atol=1e-5) and np.allclose(out[-1, -1, -1], z[-1, -1, -1], atol=1e-5)
    labels = np.zeros((10, 14, 12), dtype=np.uint8)
    labels[2:6, 3:9, 4:8] = 20
    resized = stage2_dataset.prepare_labels(labels, 16)
    assert set(np.unique(resized)) == {0, 20}  # nearest: no blended label values


def _write_zyx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), np.diag([-1.0, -1.0, 1.0, 1.0])), str(path))


def test_case_labels_unknown_vessels_and_external_labels_on_crop_or_volume_grid(tmp_path: Path) -> None:
    rois, external = tmp_path / "rois", tmp_path / "external"
    row = pd.Series({"z0": 2, "z1": 6, "y0": 1, "y1": 6, "x0": 0, "x1": 6})
    shape = (4, 5, 6)
    aneurysm = np.zeros(shape, dtype=np.uint8)
    aneurysm[1, 2, 3] = 16
    _write_zyx(rois / "masks" / "a.nii.gz", aneurysm)
    labels, source = stage2_dataset.case_labels(rois, "a", row, shape, None, True)
    assert source == "no-vessels" and labels[1, 2, 3] == 16 and set(np.unique(labels)) == {16, UNKNOWN_VESSEL}
    vessels = np.full(shape, 9, dtype=np.uint8)
    _write_zyx(rois / "vessels" / "a.nii.gz", vessels)
    labels, source = stage2_dataset.case_labels(rois, "a", row, shape, None, True)
    assert source == "vessels" and labels[1, 2, 3] == 16 and (labels == 9).sum() == labels.size - 1  # aneurysm over vessel
    # a negative series without a mask file: no aneurysm; a positive one: a clear error
    assert stage2_dataset.case_labels(rois, "b", row, shape, None, False)[0].max() == UNKNOWN_VESSEL
    with pytest.raises(FileNotFoundError, match="series c: .*Aneurysm Present"):
        stage2_dataset.case_labels(rois, "c", row, shape, None, True)

    volume = np.zeros((8, 7, 6), dtype=np.uint8)
    volume[2:6, 1:6, 0:6] = 5
    volume[3, 3, 3] = 20
    _write_zyx(external / "a.nii.gz", volume)  # the whole converted volume's grid: cut with the roi box
    labels, source = stage2_dataset.case_labels(rois, "a", row, shape, external, True)
    assert source == "external" and labels.shape == shape and labels[1, 2, 3] == 20 and (labels == 5).sum() == labels.size - 1
    _write_zyx(external / "a.nii.gz", np.full(shape, 27, dtype=np.uint8))  # the crop's grid: as is
    assert (stage2_dataset.case_labels(rois, "a", row, shape, external, True)[0] == 27).all()
    _write_zyx(external / "a.nii.gz", np.zeros((3, 3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="neither the crop"):
        stage2_dataset.case_labels(rois, "a", row, shape, external, True)


def test_raw_dataset_labels_targets_and_plans(trained: dict) -> None:
    root: Path = trained["root"]
    raw = root / "nnUNet_raw" / "Dataset201_Stage2Cube"
    rois = trained["ctx"].workspace.rois("demo", "train")
    dataset_json = json.loads((raw / "dataset.json").read_text())
    assert dataset_json["labels"]["ignore"] == UNKNOWN_VESSEL == 27 and len(dataset_json["labels"]) == 28
    assert dataset_json["channel_names"] == {"0": "zscore"}

    truth = pd.read_csv(root / "datasets" / "demo" / "train.csv", dtype={"SeriesInstanceUID": str})
    table = pd.read_csv(raw / "classification.csv", dtype={"case": str}).set_index("case")
    assert sorted(table.index) == sorted(truth.SeriesInstanceUID)
    for _, row in truth.iterrows():
        assert table.loc[row.SeriesInstanceUID, list(LABEL_COLUMNS)].tolist() == row[list(LABEL_COLUMNS)].astype(float).tolist()
        assert table.loc[row.SeriesInstanceUID, "modality"] == MODALITY_INDEX[row.Modality]

    with_vessels = {p.name[:-7] for p in (rois / "vessels").glob("*.nii.gz")}
    without = set(table.index) - with_vessels
    assert with_vessels and without
    for uid in table.index:
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "imagesTr" / f"{uid}_0000.nii.gz")))
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{uid}.nii.gz")))
        assert image.shape == labels.shape == (16, 16, 16)
        assert abs(float(image.mean())) < 0.2  # the z-scored crop, resized
        values = set(np.unique(labels).tolist())
        aneurysms = {v for v in values if 14 <= v <= 26}
        if uid in with_vessels:
            # vessel labels kept, no unknown marker
            assert UNKNOWN_VESSEL not in values and values & set(range(1, 14))
        else:
            # no vessel mask: every non-aneurysm voxel is "unknown", never "background"
            assert values - aneurysms == {UNKNOWN_VESSEL}
        positives = {14 + i for i, c in enumerate(LOCATIONS) if table.loc[uid, c] > 0}
        assert aneurysms <= positives

    plans = json.loads((root / "nnUNet_preprocessed" / "Dataset201_Stage2Cube" / "Stage2Plans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    assert config["patch_size"] == [16, 16, 16] and config["spacing"] == [1.0, 1.0, 1.0]
    assert config["normalization_schemes"] == ["ZScoreNormalization"] and list(plans["configurations"]) == ["3d_fullres"]


def test_sampling_probabilities_follow_the_targeted_oversampling(trained: dict) -> None:
    table = stage2_dataset.read_classification(trained["root"] / "nnUNet_preprocessed" / "Dataset201_Stage2Cube")
    locations = table[list(LOCATIONS)].to_numpy()
    counts = locations.sum(0)
    ids = list(table.index[:6])
    p = stage2_dataset.sampling_probabilities(table, ids)
    by_hand = []
    for uid in ids:
        hits = np.flatnonzero(table.loc[uid, list(LOCATIONS)].to_numpy() > 0)
        by_hand.append(1.0 + (np.mean(300.0 / counts[hits]) if len(hits) else 0.0))
    assert np.allclose(p, np.array(by_hand) / sum(by_hand))
    assert np.allclose(case_sampling_weights(locations)[:6], by_hand)
    with pytest.raises(KeyError, match="classification"):
        stage2_dataset.sampling_probabilities(table, ["not-a-case"])


def test_full_profile_plans_build_the_submitted_network() -> None:
    """The full profile's parameters, through the plans / network.json path, give the 109,359,299-parameter network."""
    params = get_stage("train3d").resolve("full")
    stage2_dataset.check_size(params["size"], len(params["features"]))
    base = {"configurations": {"3d_fullres": {"batch_size": 0, "patch_size": [0, 0, 0], "architecture": {}}}}
    plans = stage2_dataset.stage_plans(base, "p", params["size"], params["batch_size"], params["features"], params["blocks"])
    config = plans["configurations"]["3d_fullres"]
    assert config["patch_size"] == [224] * 3 and config["batch_size"] == 2
    spec = network_spec(config["architecture"]["arch_kwargs"], params["size"], "train3d", 0)
    network = build_network(spec, deep_supervision=True)
    assert sum(p.numel() for p in network.parameters()) == 109_359_299 and len(network.state_dict()) == 583
    with pytest.raises(ValueError, match="multiple of 32"):
        stage2_dataset.check_size(200, 6)


# ---- training ----------------------------------------------------------------------------------------

def test_train3d_learns_reports_and_leaves_the_model_contract(trained: dict) -> None:
    found = trained["jobs"]["train3d"]
    assert found[-1]["type"] == "finished" and found[-1]["status"] == "succeeded" and found[-1]["exit_code"] == 0
    loss = metrics(found, "train_loss")
    assert [s for s, _ in loss] == [0, 1, 2]
    # few random-augmented iterations per epoch: a later epoch below the first (the fixed-batch test is strict)
    assert min(v for _, v in loss[1:]) < loss[0][1], f"training loss did not go down: {loss}"
    for name in ("val_loss", "pseudo_dice", "lr", "epoch_time", "val_modality_acc", "val_cases", "train_loss_seg1",
                 "val_loss_present", "final_val_cases"):
        assert metrics(found, name), f"no {name} metric"
    lrs = [v for _, v in metrics(found, "lr")]
    assert lrs[0] == pytest.approx(0.01) and lrs[0] > lrs[1] > lrs[2]  # PolyLR
    # the 2-case validation fold has single-class columns: skipped and said so, no crash
    assert any("AUC not computable" in m for m in logs(found))

    out = artefacts(found)
    model = Path(out["model"])
    assert model.name.startswith("StageTwoTrainer__Stage2Plans_train3d_s16_") and model.name.endswith("__3d_fullres")
    assert Path(out["checkpoint"]) == model / "fold_0" / "checkpoint_final.pth"
    spec = read_network_json(model)
    assert spec["kwargs"]["features"] == [4, 8, 16] and spec["size"] == 16 and spec["train_mirror_axes"] == [0, 1]
    checkpoint = read_checkpoint(out["checkpoint"])
    assert checkpoint["current_epoch"] == 3 and checkpoint["inference_allowed_mirroring_axes"] == (0, 1)
    plans_arch = checkpoint["init_args"]["plans"]["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert plans_arch == spec["kwargs"]

    network, _ = load_network(model)
    assert not network.deep_supervision
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, checkpoint["network_weights"][name])
    heads = network.classify(torch.zeros(1, 1, 16, 16, 16), with_modality=True)
    assert heads.cls_present.shape == (1, 1) and heads.cls_locations.shape == (1, 13) and heads.modality.shape == (1, 4)
    predictions = pd.read_csv(model / "fold_0" / "validation" / "predictions.csv", dtype={"SeriesInstanceUID": str})
    assert list(predictions.columns) == ["SeriesInstanceUID", *LABEL_COLUMNS] and len(predictions) == 2
    # the file holds the final network's heads on fold 0's validation cases, column by column
    preprocessed = trained["root"] / "nnUNet_preprocessed" / "Dataset201_Stage2Cube"
    validation = json.loads((preprocessed / "splits_final.json").read_text())[0]["val"]
    assert sorted(predictions["SeriesInstanceUID"]) == sorted(validation)
    folder = preprocessed / checkpoint["init_args"]["plans"]["configurations"]["3d_fullres"]["data_identifier"]
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    cases = infer_dataset_class(str(folder))(str(folder), validation)
    network.eval()
    for row in predictions.itertuples(index=False):
        x = torch.from_numpy(np.asarray(cases.load_case(row.SeriesInstanceUID)[0][:], dtype=np.float32))[None]
        with torch.no_grad():
            heads = network.classify(x, with_modality=True)
        expected = torch.sigmoid(torch.cat([heads.cls_locations[0], heads.cls_present[0]])).numpy()
        np.testing.assert_allclose(np.asarray(row[1:], dtype=float), expected, atol=1e-5)


def test_finetunes_start_from_train3d_weights_only(trained: dict) -> None:
    base = artefacts(trained["jobs"]["train3d"])["checkpoint"]
    start = read_checkpoint(base)["network_weights"]
    fresh = build_network(read_network_json(Path(base).parents[1]), deep_supervision=True).state_dict()
    for stage, fold in (("finetune1", 0), ("finetune2", 1)):
        found = trained["jobs"][stage]
        assert found[-1]["status"] == "succeeded"
        assert any(m.startswith(f"initialised the network from {base}") for m in logs(found))
        out = artefacts(found)
        model = Path(out["model"])
        assert model.name.startswith(f"StageTwoTrainer__Stage2Plans_{stage}_s16_")
        assert Path(out["checkpoint"]) == model / f"fold_{fold}" / "checkpoint_final.pth"
        checkpoint = read_checkpoint(out["checkpoint"])
        assert checkpoint["current_epoch"] == 1  # its own schedule: the epoch counter is not train3d's
        assert [s for s, _ in metrics(found, "lr")] == [0] and metrics(found, "lr")[0][1] == pytest.approx(0.004)
        tuned = checkpoint["network_weights"]
        # two small steps away from train3d, far from any fresh initialisation
        near = sum(float((tuned[k].float() - start[k].float()).norm()) for k in start if start[k].is_floating_point())
        far = sum(float((tuned[k].float() - fresh[k].float()).norm()) for k in start if start[k].is_floating_point())
        assert near < 0.2 * far
    assert {json.loads(Path(artefacts(trained["jobs"][s])["network"]).read_text())["fold"]
            for s in ("finetune1", "finetune2")} == {0, 1}


def test_fixed_batch_overfits_with_the_training_loss_and_optimizer(trained: dict) -> None:
    """Network + StageTwoLoss + the trainer's SGD settings on two real cases of the dataset."""
    raw = trained["root"] / "nnUNet_raw" / "Dataset201_Stage2Cube"
    table = pd.read_csv(raw / "classification.csv", dtype={"case": str}).set_index("case")
    cases = list(table.index[:2])
    read = lambda p: torch.from_numpy(sitk.GetArrayFromImage(sitk.ReadImage(str(p))).astype(np.float32))  # noqa: E731
    x = torch.stack([read(raw / "imagesTr" / f"{c}_0000.nii.gz") for c in cases])[:, None]
    y = torch.stack([read(raw / "labelsTr" / f"{c}.nii.gz") for c in cases])[:, None].long()
    rows = table.loc[cases]
    targets = (torch.tensor(rows["Aneurysm Present"].to_numpy(), dtype=torch.float32),
               torch.tensor(rows[list(LOCATIONS)].to_numpy(), dtype=torch.float32),
               torch.tensor(rows["modality"].to_numpy()))
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    network = build_network(read_network_json(Path(artefacts(trained["jobs"]["train3d"])["model"])), deep_supervision=True)
    loss = StageTwoLoss(2)
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    values = []
    try:
        for _ in range(8):
            optimizer.zero_grad()
            total = loss(network(x), y, *targets).total
            total.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
            optimizer.step()
            values.append(float(total.detach()))
    finally:
        torch.set_num_threads(threads)
    assert values[-1] < 0.7 * values[0], values


def test_optimizer_parameter_picks_sgd_or_adamw_under_the_same_schedule(trained: dict) -> None:
    """finetune1 trains with the original's SGD, finetune2 with AdamW (the demo profile's): the saved
    optimizer state says which ran, and both follow PolyLR from their initial rate."""
    for stage, kind, state_key in (("finetune1", torch.optim.SGD, "momentum_buffer"),
                                   ("finetune2", torch.optim.AdamW, "exp_avg")):
        checkpoint = read_checkpoint(Path(artefacts(trained["jobs"][stage])["checkpoint"]), torch.device("cpu"))
        state = checkpoint["optimizer_state"]
        assert all(state_key in per_param for per_param in state["state"].values()), (stage, kind)
        group = state["param_groups"][0]
        assert ("betas" in group) == (kind is torch.optim.AdamW) and ("nesterov" in group) == (kind is torch.optim.SGD)
        spec = get_stage(stage)
        assert spec.param("optimizer").parse("adamw") == "adamw"
        with pytest.raises(ValueError, match="optimizer"):
            spec.param("optimizer").parse("adam")
    # and the job says how it trained: finetune2 with the demo profile's CPU settings
    started = {s: next(m for m in logs(trained["jobs"][s]) if m.startswith(f"{s}: Dataset201")) for s in ("finetune1", "finetune2")}
    assert started["finetune1"].endswith("on cpu (sgd, fp32, augmentation nnunet)"), started
    bf16 = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"  # fp32 where the CPU lacks bf16 kernels
    assert started["finetune2"].endswith(f"on cpu (adamw, {bf16}, augmentation mirror)"), started


def _process_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    import psutil

    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return out


def test_cancel_mid_epoch_then_resume_continues_from_the_checkpoint(trained: dict) -> None:
    """``rsna-tui run --follow`` of a train3d, cancelled once two epochs are done (the CLI's cancel lands in
    the third or, on a busy machine, a later one): finished ``cancelled``, nothing left of its process
    group; ``rsna-tui resume`` goes on from the checkpoint of the last finished epoch."""
    root: Path = trained["root"]
    # batch 1: another plans name, so another results folder than the fixture's train3d
    epochs = 5
    params = {**SMALL, "batch_size": 1, "epochs": epochs, "iterations": 5, "val_iterations": 1, "initial_lr": 0.01}
    follow = subprocess.Popen([sys.executable, "-m", "rsna_tui", "--workspace", str(root), "run", "--stage", "train3d",
                               "--no-deps", *set_options(params), "--follow"], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    plan_line = follow.stdout.readline()  # the plan: "0 train3d  run as job N  --no-deps"
    job_id = int(re.search(r"job (\d+)", plan_line).group(1))
    pgid = None
    try:
        deadline = time.monotonic() + 300
        while True:  # two epochs done (checkpoint_latest written before the progress event), the third training
            found = job_events(root, job_id)
            pgid = pgid or next((e["pid"] for e in found if e["type"] == "started"), None)
            if max((e["done"] for e in found if e["type"] == "progress"), default=0) >= 2:
                break
            assert follow.poll() is None and not any(e["type"] == "finished" for e in found), job_log(root, job_id)
            assert time.monotonic() < deadline, f"job {job_id} did not finish two epochs:\n{job_log(root, job_id)}"
            time.sleep(0.1)
        assert rsna_tui(root, "cancel", str(job_id), "--grace", "10").stdout.split() == [str(job_id), "cancelled"]
        output, _ = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
        if pgid and _process_group(pgid):
            os.killpg(pgid, signal.SIGKILL)
    cancelled = job_events(root, job_id)
    assert follow.returncode == 1 and f"[{job_id} train3d] cancelled" in output
    finished = cancelled[-1]
    assert (finished["type"], finished["status"], finished["exit_code"]) == ("finished", "cancelled", 143)
    assert _process_group(pgid) == [], "a process of the cancelled job's group is still running"
    # cancelled inside an epoch: the finished ones reported and checkpointed, the training not done
    done = max(e["done"] for e in cancelled if e["type"] == "progress")
    assert 2 <= done < epochs and [s for s, _ in metrics(cancelled, "train_loss")] == list(range(done))
    latest = list((root / "nnUNet_results" / "Dataset201_Stage2Cube").glob("*_s16_*/fold_0/checkpoint_latest.pth"))
    latest = [p for p in latest if not (p.parent / "checkpoint_final.pth").exists()]
    assert len(latest) == 1
    saved = read_checkpoint(latest[0])["current_epoch"]  # done + 1 if SIGTERM fell between checkpoint and report
    assert saved in (done, done + 1) and saved < epochs, (saved, done)
    shown = json.loads(rsna_tui(root, "show", str(job_id), "--json").stdout)
    assert shown["status"] == "cancelled" and shown["exit_code"] == 143

    resumed_id = int(rsna_tui(root, "resume", str(job_id)).stdout)
    deadline = time.monotonic() + 300
    while not any(e["type"] == "finished" for e in job_events(root, resumed_id)):
        assert time.monotonic() < deadline, f"resumed job {resumed_id} did not finish:\n{job_log(root, resumed_id)}"
        time.sleep(0.2)
    resumed = job_events(root, resumed_id)
    assert resumed[-1]["status"] == "succeeded", job_log(root, resumed_id)
    job = json.loads(rsna_tui(root, "show", str(resumed_id), "--json").stdout)
    assert job["status"] == "succeeded" and job["parent_id"] == job_id and job["attempt"] == 2 and job["resume"] is True
    assert f"resuming from {latest[0]}" in logs(resumed)
    assert [s for s, _ in metrics(resumed, "train_loss")] == list(range(saved, epochs))  # the epoch counter continues
    final = Path(artefacts(resumed)["checkpoint"])
    assert final.parent == latest[0].parent and read_checkpoint(final)["current_epoch"] == epochs
    assert not latest[0].exists()  # nnU-Net removes checkpoint_latest once final is written
