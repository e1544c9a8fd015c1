"""``rsna-tui export-kaggle``: a folder to upload as a Kaggle dataset, with what the competition's
notebook needs to run the trained model offline.

```
OUT/
  kaggle_export.json        what is inside: model folders (and the job or folder each came from), tta,
                            package versions; the notebook reads it
  notebook.py               the notebook's code (paste it into a cell, or run it): installs wheels/ when
                            present, puts code/ first on sys.path, calls engine.inference.kaggle.serve
  requirements.txt          the engine's packages and all their dependencies pinned to this machine's
                            versions (not torch / torchvision: keep the notebook's CUDA build; the torch
                            version trained with is a comment)
  code/engine/              the engine package (it imports nothing of rsna_tui)
  models/stage1/<folder>/   the stage-1 nnU-Net results folder: *.json, fold_*/checkpoint_final.pth
  models/stage2_<n>/<folder>/  each stage-2 results folder (the two fine-tunes): *.json, fold_*/checkpoint_final.pth
```

Models are job ids of the workspace (their ``model`` artefact, through the store) or folders; by
default the latest successful ``train2d`` for stage 1 and ``finetune1`` and ``finetune2`` for stage 2.
Only what inference reads is copied (no training logs, no ``checkpoint_best`` / ``checkpoint_latest``).
The folder is written under a temporary name and renamed, so a half-written export never looks done.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import engine
from engine.stages import get_stage
from rsna_tui.gateway import latest_job_with
from rsna_tui.jobs.manager import JobError
from rsna_tui.jobs.store import Store

MANIFEST = "kaggle_export.json"
NOTEBOOK = "notebook.py"
REQUIREMENTS = "requirements.txt"
STAGE1_STAGE = "train2d"
STAGE2_STAGES = ("finetune1", "finetune2")
#: The engine's run-time packages (what inference imports; torch apart), as canonical names.
ENGINE_PACKAGES = ("nnunetv2", "dynamic-network-architectures", "batchgenerators", "dicom2nifti", "nibabel",
                   "pydicom", "simpleitk", "numpy", "pandas", "scikit-learn", "scipy", "polars")
#: What the notebook's image brings and the export must not replace (a CUDA build of torch).
IMAGE_PACKAGES = ("torch", "torchvision")
#: Copied as notebook.py: a script of its own (it imports nothing of rsna_tui).
NOTEBOOK_TEMPLATE = Path(__file__).with_name("kaggle_notebook.py")


class ExportError(JobError):
    """A model reference or an output folder that an export cannot use; the message names it."""


@dataclass(frozen=True)
class ModelSource:
    """One model folder to export and where it came from (``job 12 (finetune1)`` or the path)."""

    path: Path
    origin: str


def resolve_model(store: Store, ref: str, stages: tuple[str, ...]) -> ModelSource:
    """A job id (its ``model`` artefact; the job must be a successful job of one of ``stages``) or a folder."""
    if ref.isdigit():
        job = store.get_job(int(ref))
        if job is None:
            raise ExportError(f"no job {ref} in {store.path}")
        if job.stage not in stages or job.status != "succeeded":
            raise ExportError(f"job {ref} is a {job.status} {job.stage} job; expected a succeeded "
                              f"{' or '.join(stages)} job")
        path = store.artefacts(job.id).get("model")
        if path is None:
            raise ExportError(f"job {ref} ({job.stage}) registered no 'model' artefact")
        return ModelSource(Path(path), f"job {ref} ({job.stage})")
    path = Path(ref).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"{ref} is neither a job id of {store.path} nor a model folder")
    return ModelSource(path, str(path))


def latest_model(store: Store, stage: str) -> ModelSource | None:
    found = latest_job_with(store, stage, "model")
    return resolve_model(store, str(found[0]), (stage,)) if found else None


def choose_models(store: Store, stage1: str, models: str) -> tuple[ModelSource, list[ModelSource]]:
    """The stage-1 model and the stage-2 models named (comma separated) or, when blank, the latest ones."""
    if stage1.strip():
        first = resolve_model(store, stage1.strip(), (STAGE1_STAGE,))
    elif (found := latest_model(store, STAGE1_STAGE)) is not None:
        first = found
    else:
        raise ExportError(f"no succeeded {STAGE1_STAGE} job with a model in {store.path}: train stage 1 or name "
                          f"its folder with --stage1-model")
    if models.strip():
        second = [resolve_model(store, part.strip(), STAGE2_STAGES) for part in models.split(",") if part.strip()]
    else:
        second = [m for stage in STAGE2_STAGES if (m := latest_model(store, stage)) is not None]
    if not second:
        raise ExportError(f"no succeeded {' / '.join(STAGE2_STAGES)} job with a model in {store.path}: train "
                          f"stage 2 or name the folders with --models")
    return first, second


def copy_model(source: Path, target: Path) -> list[str]:
    """Copy what inference reads from a results folder; the copied paths, relative to ``target``."""
    checkpoints = sorted(source.glob("fold_*/checkpoint_final.pth"))
    if not checkpoints:
        raise FileNotFoundError(f"{source} holds no fold_*/checkpoint_final.pth: not a trained results folder")
    copied = []
    for path in [*sorted(source.glob("*.json")), *checkpoints]:
        relative = path.relative_to(source)
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / relative)
        copied.append(str(relative))
    return copied


def installed_closure(names: tuple[str, ...]) -> dict[str, str]:
    """Installed distributions ``names`` need, their dependencies included: canonical name -> version."""
    from importlib import metadata  # only here: the CLI's other commands start faster without these

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[name] = dist.version.split("+")[0]
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def pinned_requirements() -> tuple[str, dict[str, str]]:
    """``requirements.txt`` text (every package the engine needs, dependencies included, so that an
    offline ``pip install --no-deps`` from ``wheels/`` is complete; torch, torchvision and what they need
    are left to the notebook's image) and the versions of the engine's own packages and torch."""
    image = installed_closure(IMAGE_PACKAGES)
    needed = {name: version for name, version in installed_closure(ENGINE_PACKAGES).items() if name not in image}
    lines = ["# The engine's packages and their dependencies at the versions this export was made with",
             "# (rsna-tui export-kaggle). torch, torchvision and their dependencies: keep the notebook's",
             f"# CUDA build; the models were made with torch {image.get('torch', '?')}.",
             *(f"{name}=={version}" for name, version in sorted(needed.items()))]
    versions = {name: needed[name] for name in ENGINE_PACKAGES if name in needed}
    return "\n".join(lines) + "\n", {"torch": image.get("torch", ""), **versions}


def export(store: Store, out: Path, stage1: str = "", models: str = "", tta: int | None = None) -> dict[str, Any]:
    """Write the export folder ``out`` (see the module docstring); returns its manifest."""
    out = out.expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not empty; choose a new folder")
    tta = tta if tta is not None else get_stage("predict").defaults("full")["tta"]
    if tta not in (1, 4, 8):
        raise ExportError(f"--tta {tta}: use 1, 4 or 8 flip views")
    first, second = choose_models(store, stage1, models)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        entries = []
        for role, source in [("stage1", first), *((f"stage2_{i}", m) for i, m in enumerate(second, start=1))]:
            relative = Path("models") / role / source.path.name
            files = copy_model(source.path, partial / relative)
            entries.append({"role": role, "path": str(relative), "origin": source.origin, "files": files})
        shutil.copytree(Path(engine.__file__).parent, partial / "code" / "engine",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        requirements, versions = pinned_requirements()
        (partial / REQUIREMENTS).write_text(requirements)
        shutil.copy2(NOTEBOOK_TEMPLATE, partial / NOTEBOOK)
        manifest = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "stage1_model": entries[0]["path"],
            "models": [e["path"] for e in entries[1:]],
            "tta": tta,
            "sources": entries,
            "versions": versions,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if out.exists():
            out.rmdir()  # empty (checked above)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {**manifest, "folder": str(out)}
