"""Which workspace is used, what is created when, and the environment jobs get."""
from __future__ import annotations

from pathlib import Path

import pytest

from rsna_tui import cli as cli_module
from rsna_tui.workspace import Workspace, choose_root, nnunet_process_defaults


def test_option_beats_variable_beats_user_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSNA_TUI_WORKSPACE", str(tmp_path / "from-env"))
    assert choose_root(tmp_path / "from-option") == tmp_path / "from-option"
    assert choose_root(None) == tmp_path / "from-env"
    monkeypatch.delenv("RSNA_TUI_WORKSPACE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert choose_root(None) == tmp_path / "xdg" / "rsna-tui"
    assert not (tmp_path / "xdg").exists(), "choosing a workspace must not create it"


def test_folders_are_created_only_when_needed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "fresh"
    assert cli_module.main(["-w", str(root), "stages", "--json"]) == 0
    assert not root.exists()
    assert cli_module.main(["-w", str(root), "jobs", "--json"]) == 0
    assert capsys.readouterr().out.strip().endswith("[]")
    assert sorted(p.name for p in root.iterdir()) == ["jobs.db", "jobs.db-shm", "jobs.db-wal"]


def test_job_environment_points_nnunet_into_the_workspace(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    env = ws.job_environment({"PATH": "/bin", "nnUNet_n_proc_DA": "3", "nnUNet_raw": "/elsewhere"}, cores=16)
    assert env["nnUNet_raw"] == str(tmp_path / "nnUNet_raw")
    assert env["nnUNet_preprocessed"] == str(tmp_path / "nnUNet_preprocessed")
    assert env["nnUNet_results"] == str(tmp_path / "nnUNet_results")
    assert env["nnUNet_def_n_proc"] == "8" and env["nnUNet_n_proc_DA"] == "3"  # the user's value wins
    assert env["PATH"] == "/bin" and env["PYTHONUNBUFFERED"] == "1"
    assert nnunet_process_defaults(2) == {"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0"}
    assert nnunet_process_defaults(1) == {"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0"}
