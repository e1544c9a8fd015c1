"""The rule for the real scans: a user's checkout without ``../shared/data`` skips with the reason,
CI (``CI=true`` or ``RSNA_TUI_REQUIRE_DATA=1``) fails. Run as a real pytest session: a one-test file
using the ``shared_data`` fixture, with ``tests/conftest.py`` loaded as a plugin (nothing heavy imported)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, data_required

PROBE = "def test_needs_the_scans(shared_data):\n    assert shared_data.is_dir()\n"


def _session(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "RSNA_TUI_REQUIRE_DATA")}
    base.update({"PYTHONPATH": str(REPO), "RSNA_TUI_SHARED_DATA": str(tmp_path / "no-shared-data"), **env})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_probe.py")],
                          cwd=tmp_path, env=base, capture_output=True, text=True, timeout=120)


def test_missing_real_scans_fail_in_ci_and_skip_with_the_reason_elsewhere(tmp_path: Path) -> None:
    ci = _session(tmp_path, CI="true")
    assert ci.returncode == 1, ci.stdout
    assert "1 error" in ci.stdout and "real scans not found" in ci.stdout and "requires them" in ci.stdout
    user = _session(tmp_path)
    assert user.returncode == 0, user.stdout
    assert "1 skipped" in user.stdout and f"real scans not found at {tmp_path / 'no-shared-data'}" in user.stdout


def test_which_environments_require_the_data() -> None:
    assert not data_required({}) and not data_required({"CI": "false"})
    assert data_required({"CI": "true"}) and data_required({"RSNA_TUI_REQUIRE_DATA": "1"})
    assert not data_required({"CI": "true", "RSNA_TUI_REQUIRE_DATA": "0"})
