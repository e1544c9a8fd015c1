"""Kaggle notebook: RSNA 2025 Intracranial Aneurysm Detection with rsna-tui's two-stage model.

Written by ``rsna-tui export-kaggle`` (this file is copied as ``notebook.py`` into the export folder;
it imports nothing of rsna-tui). In Kaggle: upload the export folder as a dataset, attach it and the
competition to a notebook without internet, and run this file (``%run`` it, or paste it into a cell).

It finds its folder (``RSNA_TUI_EXPORT``, else beside this file, else the attached dataset holding
``kaggle_export.json`` under ``/kaggle/input``), installs ``wheels/`` when the folder has one (the
list is complete, dependencies included, so ``pip download --no-deps -r requirements.txt -d wheels``
on a machine with internet and the notebook's Python fills it), puts the exported ``code/`` first on ``sys.path`` and calls
``engine.inference.kaggle.serve`` with the exported models: the competition's gateway when
``kaggle_evaluation`` is there, the in-process local gateway otherwise (``RSNA_TUI_KAGGLE_SERIES``,
``RSNA_TUI_KAGGLE_SHARED``, ``RSNA_TUI_KAGGLE_SUBMISSION`` choose its folders and output).
``RSNA_TUI_DEVICE`` (auto, cuda, cpu) and ``RSNA_TUI_TTA`` override the device and the flip views.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MANIFEST = "kaggle_export.json"


def export_folder() -> Path:
    """The folder of the export: named, beside this file, or the attached Kaggle dataset."""
    if os.environ.get("RSNA_TUI_EXPORT"):
        return Path(os.environ["RSNA_TUI_EXPORT"])
    if "__file__" in globals() and (Path(__file__).resolve().parent / MANIFEST).is_file():
        return Path(__file__).resolve().parent
    found = sorted(Path("/kaggle/input").glob(f"*/{MANIFEST}")) + sorted(Path("/kaggle/input").glob(f"*/*/{MANIFEST}"))
    if not found:
        raise SystemExit(f"{MANIFEST} not found: attach the folder written by rsna-tui export-kaggle as a dataset, "
                         f"or set RSNA_TUI_EXPORT to it")
    return found[0].parent


def main() -> None:
    here = export_folder()
    manifest = json.loads((here / MANIFEST).read_text())
    wheels = here / "wheels"
    if wheels.is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links", str(wheels),
                        "-r", str(here / "requirements.txt")], check=True)
    sys.path.insert(0, str(here / "code"))
    # nnU-Net reads its folders from the environment at import time; inference needs none of them.
    scratch = Path(tempfile.gettempdir()) / "rsna-tui-nnunet"
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(name, str(scratch / name))
    os.environ.setdefault("nnUNet_def_n_proc", "1")

    from engine.inference import kaggle

    print(f"rsna-tui export of {manifest['created']}: engine from {Path(kaggle.__file__).parent.parent}", flush=True)
    kaggle.serve(stage1_model=here / manifest["stage1_model"], models=[here / m for m in manifest["models"]],
                 tta=int(os.environ.get("RSNA_TUI_TTA") or manifest["tta"]),
                 device=os.environ.get("RSNA_TUI_DEVICE", "auto"))


if __name__ == "__main__":
    main()
