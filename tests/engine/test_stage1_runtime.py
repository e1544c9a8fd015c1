"""engine.nnunet_runtime pieces that the end-to-end training does not pin down on its own."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.context import WorkspaceLayout
from engine.nnunet_runtime import (RESUME_ORDER, TrainerSettings, configure_environment, edit_plans,
                                   reporting_trainer, resume_checkpoint, select_device)
from engine.reporter import ListReporter

PLANS = {
    "configurations": {
        "2d": {
            "batch_size": 12,
            "architecture": {"arch_kwargs": {
                "n_stages": 5, "features_per_stage": [32, 64, 128, 256, 512],
                "kernel_sizes": [[3, 3]] * 5, "strides": [[1, 1]] + [[2, 2]] * 4,
                "n_conv_per_stage": [2] * 5, "n_conv_per_stage_decoder": [2] * 4,
            }},
        },
        "3d_cascade_fullres": {"inherits_from": "3d_fullres"},
    }
}


def test_edit_plans_cuts_the_network_to_the_given_widths_and_leaves_the_input_alone() -> None:
    edited = edit_plans(PLANS, "2d", batch_size=4, features=[8, 16, 32])
    arch = edited["configurations"]["2d"]["architecture"]["arch_kwargs"]
    assert edited["configurations"]["2d"]["batch_size"] == 4
    assert arch["n_stages"] == 3 and arch["features_per_stage"] == [8, 16, 32]
    assert arch["strides"] == [[1, 1], [2, 2], [2, 2]] and len(arch["kernel_sizes"]) == 3
    assert arch["n_conv_per_stage"] == [2, 2, 2] and arch["n_conv_per_stage_decoder"] == [2, 2]
    assert PLANS["configurations"]["2d"]["batch_size"] == 12  # a copy was edited
    assert edit_plans(PLANS, "2d") == PLANS
    with pytest.raises(ValueError, match="only 5"):
        edit_plans(PLANS, "2d", features=[8] * 6)
    with pytest.raises(ValueError, match="inherits"):
        edit_plans(PLANS, "3d_cascade_fullres", batch_size=2)


def test_resume_checkpoint_follows_nnunet_c_order(tmp_path: Path) -> None:
    assert resume_checkpoint(tmp_path) is None
    for name in reversed(RESUME_ORDER):  # best, then latest, then final appear
        (tmp_path / name).write_bytes(b"")
        assert resume_checkpoint(tmp_path) == tmp_path / name
    assert RESUME_ORDER[0] == "checkpoint_final.pth"


PROCESS_KEYS = ("nnUNet_def_n_proc", "nnUNet_n_proc_DA")


def test_environment_points_nnunet_at_the_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tests/conftest.py sets the worker counts for the whole session: clear them, or nothing is computed
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", *PROCESS_KEYS):
        monkeypatch.delenv(key, raising=False)
    values = configure_environment(WorkspaceLayout(tmp_path), processes=2)
    assert os.environ["nnUNet_results"] == str(tmp_path / "nnUNet_results") == values["nnUNet_results"]
    assert (tmp_path / "nnUNet_raw").is_dir()
    # two processes: augmentation in the main process; more: one worker fewer; never above 8
    for processes, expected in ((2, ("2", "0")), (1, ("1", "0")), (6, ("6", "5")), (20, ("8", "7"))):
        for key in PROCESS_KEYS:
            monkeypatch.delenv(key, raising=False)
        values = configure_environment(WorkspaceLayout(tmp_path), processes=processes)
        assert tuple(os.environ[k] for k in PROCESS_KEYS) == tuple(values[k] for k in PROCESS_KEYS) == expected
    for key in PROCESS_KEYS:
        monkeypatch.delenv(key, raising=False)
    cores = min(os.cpu_count() or 1, 8)
    values = configure_environment(WorkspaceLayout(tmp_path))  # default: the machine's cores
    assert values["nnUNet_def_n_proc"] == str(cores)
    assert values["nnUNet_n_proc_DA"] == str(0 if cores <= 2 else cores - 1)
    # a value the user set wins over the computed one
    monkeypatch.setenv("nnUNet_n_proc_DA", "3")
    assert configure_environment(WorkspaceLayout(tmp_path), processes=2)["nnUNet_n_proc_DA"] == "3"


def test_device_choice_and_settings() -> None:
    import torch

    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            select_device("cuda")

    class Fake:
        num_epochs, initial_lr = 1000, 0.01

    fake = Fake()
    TrainerSettings(epochs=3, initial_lr=None).apply(fake)
    assert fake.num_epochs == 3 and fake.initial_lr == 0.01


def test_reporting_trainer_keeps_nnunets_name() -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    cls = reporting_trainer()
    assert cls.__name__ == "nnUNetTrainer" and issubclass(cls, nnUNetTrainer) and cls is reporting_trainer()
    trainer = cls.__new__(cls)
    trainer.reporter, trainer.current_epoch = ListReporter(), 4
    trainer.report_metric("auc_present", 0.75)
    assert trainer.reporter.events == [{"type": "metric", "name": "auc_present", "value": 0.75, "step": 4}]
