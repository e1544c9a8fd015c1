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


#: Set to 1 where the real scans must be there (``.ci/run``); ``CI=true`` (set by CI services) means the same.
REQUIRE_DATA_VAR = "RSNA_TUI_REQUIRE_DATA"


def data_required(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether a missing ``../shared/data`` fails the tests instead of skipping them: in CI a skip
    would leave the suite green without its real-scan tests. ``RSNA_TUI_REQUIRE_DATA=0`` opts out."""
    explicit = env.get(REQUIRE_DATA_VAR, "").strip().lower()
    if explicit:
        return explicit in ("1", "true", "yes")
    return env.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real scans; tests that need them skip when the folder is absent (a user's checkout) and
    fail in CI (``data_required``)."""
    if not SHARED_DATA.is_dir():
        reason = f"real scans not found at {SHARED_DATA} (set RSNA_TUI_SHARED_DATA)"
        if data_required():
            pytest.fail(f"{reason}; {REQUIRE_DATA_VAR}=1 or CI=true requires them", pytrace=False)
        pytest.skip(reason)
    return SHARED_DATA


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace folder of its own for each test."""
    root = tmp_path / "ws"
    root.mkdir()
    return root


# --- demo cohort (issue 3) ---------------------------------------------------------------------

DEMO_COHORT_PARAMS = {"n": 12, "seed": 7, "size": 32, "test_fraction": 0.25, "defects": False, "test_tags_only": False}


def _demo_cohort(factory: pytest.TempPathFactory, name: str, **overrides: object) -> Path:
    from engine.context import StageContext
    from engine.data.demo import run

    root = factory.mktemp(name)
    out = root / "demo"
    run({**DEMO_COHORT_PARAMS, **overrides, "out": str(out)}, StageContext.for_folder(root / "ws"))
    return out


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic cohort in the exact Kaggle layout, generated once per session (~2 s).

    ``DEMO_COHORT_PARAMS``: 12 series of 32 pixels per side (slices vary, anisotropic spacing), seed 7.
    Guaranteed: 9 training series in ``series/`` (train.csv, train_localizers.csv) and 3 held out in
    ``test/series/`` (test_truth.csv); all four modalities; positives and negatives in both splits;
    among the training positives one sagittal, one coronal, one axial with reversed slice order and
    one single-file multi-frame (Enhanced, frames in reversed order) series, each with localizers
    and a segmentation (``segmentations/<uid>/<uid>.nii`` and ``<uid>_cowseg.nii``); further
    segmentations for some other training series. Sagittal and coronal series have fewer columns
    than rows (28 x 32), coronal ones also rectangular pixels. No defects; every series converts
    with dicom2nifti. ``demo_series.csv`` says which series is which (orientation, reversed,
    multiframe, segmentation, spacing, shape); ``aneurysms.csv`` gives each aneurysm's true centre
    (LPS mm) and radius.
    """
    return _demo_cohort(tmp_path_factory, "demo_cohort")


@pytest.fixture(scope="session")
def demo_cohort_with_defects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same cohort with ``defects=true`` (~2 s): four training series broken on purpose.

    One each of a missing slice, a duplicated ImagePositionPatient, a truncated file and a non-image
    object (a Basic Text SR) in the series folder; ``defects.csv`` lists them (SeriesInstanceUID,
    defect). The guaranteed kinds of ``demo_cohort`` are kept and never broken.
    """
    return _demo_cohort(tmp_path_factory, "demo_cohort_defects", defects=True)
