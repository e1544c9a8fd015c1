"""The rule for the real scans: a user's checkout without ``../shared/data`` skips with the reason,
CI (``CI=true`` or ``RSNA_TUI_REQUIRE_DATA=1``) fails. Run as a real pytest session on one real-scan test."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, data_required

REAL_SCAN_TEST = "tests/engine/test_stage2_targets.py::test_left_right_swap_on_a_real_circle_of_willis"


def _session(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "RSNA_TUI_REQUIRE_DATA")}
    base.update({"PYTHONPATH": str(REPO), "RSNA_TUI_SHARED_DATA": str(tmp_path / "no-shared-data"), **env})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", REAL_SCAN_TEST],
                          cwd=REPO, env=base, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("env", [{"CI": "true"}, {"RSNA_TUI_REQUIRE_DATA": "1"}])
def test_missing_real_scans_fail_in_ci(tmp_path: Path, env: dict[str, str]) -> None:
    result = _session(tmp_path, **env)
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout and "real scans not found" in result.stdout and "requires them" in result.stdout


def test_missing_real_scans_skip_with_the_reason_elsewhere(tmp_path: Path) -> None:
    result = _session(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and f"real scans not found at {tmp_path / 'no-shared-data'}" in result.stdout
    opted_out = _session(tmp_path, CI="true", RSNA_TUI_REQUIRE_DATA="0")
    assert opted_out.returncode == 0 and "1 skipped" in opted_out.stdout


def test_which_environments_require_the_data() -> None:
    assert not data_required({}) and not data_required({"CI": "false"})
    assert data_required({"CI": "true"}) and data_required({"RSNA_TUI_REQUIRE_DATA": "1"})
    assert not data_required({"CI": "true", "RSNA_TUI_REQUIRE_DATA": "0"})
