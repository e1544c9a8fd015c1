"""Shared fixtures: the real scans of ../shared/data and per-test workspaces."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# nnU-Net reads these at import time and warns loudly without them; tests point them at a
# throw-away folder. Jobs set their own from the workspace.
os.environ.setdefault("nnUNet_def_n_proc", "1")
os.environ.setdefault("nnUNet_n_proc_DA", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RSNA_TUI_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real scans; tests that need them skip when the folder is absent (a user's checkout)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real scans not found at {SHARED_DATA} (set RSNA_TUI_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace folder of its own for each test."""
    root = tmp_path / "ws"
    root.mkdir()
    return root
