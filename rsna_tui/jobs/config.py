"""``<workspace>/config.toml``: the default backend and what Slurm jobs ask the cluster for.

Every key is optional; a missing file means the local backend and the resources below::

    backend = "slurm"                  # default of `run` / `pipeline` (`--backend` overrides it)

    [slurm]
    partition = "gpu"                  # sbatch --partition ('' = the cluster's default)
    account = "radiology"              # sbatch --account
    qos = "normal"                     # sbatch --qos
    extra = ["--constraint=a100"]      # further sbatch options, passed as they are
    python = ""                        # interpreter on the compute nodes ('' = the submitting one)
    resubmit = true                    # time limit / preemption / node failure -> a linked new attempt
    max_attempts = 20                  # ... up to this attempt number
    poll_seconds = 10.0                # at most one squeue per this many seconds and process; the
                                       # detached scheduler watches Slurm jobs this often
    allow_local_workspace = false      # true: skip the shared-file-system check

    [slurm.resources.train3d]          # per stage; any of gpus, cpus, mem, time
    gpus = 1
    cpus = 16
    mem = "128G"
    time = "24:00:00"

Built-in resources per stage, for the ``full`` profile (the original run, MODEL_SPEC): the 3D
trainings (``train3d``, the two fine-tunes) need one GPU with more than 53 GB (the original used one
A100 80GB at batch 2, 224^3), 16 CPUs for nnU-Net's augmentation workers, 128G of host memory and
24 h per attempt; 1,000 epochs of ``train3d`` take several attempts, each resubmitted with resume
semantics when its time limit ends it. ``train2d`` (2D nnU-Net, 1,000 epochs) the same GPU class,
12 CPUs, 64G, 24 h. ``convert`` of 4,348 series: 16 CPUs, 64G, 12 h (shard it with
``--set shards=N`` for an array). ``stage1-data``: 8 CPUs, 32G, 4 h. ``roi`` and ``predict``: one GPU,
8 CPUs, 32G, 4 h and 12 h (about 2,500 series in 12 h in the competition). ``evaluate`` and
``demo-data``: 1-2 CPUs, 4-8G, 1 h. The ``tiny`` profile asks for 1 CPU, 2G and 1 h, and one GPU for
the GPU stages. A stage not listed (test stages) gets the tiny values, and a GPU when it is a GPU stage.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.toml"
BACKENDS = ("local", "slurm")


class ConfigError(ValueError):
    """A config.toml that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Resources:
    """What one job asks the cluster for."""

    gpus: int = 0
    cpus: int = 1
    mem: str = "2G"
    time: str = "1:00:00"


_FULL: dict[str, Resources] = {
    "demo-data": Resources(0, 2, "8G", "1:00:00"),
    "convert": Resources(0, 16, "64G", "12:00:00"),
    "stage1-data": Resources(0, 8, "32G", "4:00:00"),
    "train2d": Resources(1, 12, "64G", "24:00:00"),
    "roi": Resources(1, 8, "32G", "4:00:00"),
    "train3d": Resources(1, 16, "128G", "24:00:00"),
    "finetune1": Resources(1, 16, "128G", "24:00:00"),
    "finetune2": Resources(1, 16, "128G", "24:00:00"),
    "predict": Resources(1, 8, "32G", "12:00:00"),
    "evaluate": Resources(0, 1, "4G", "1:00:00"),
}
_TINY = Resources(0, 1, "2G", "1:00:00")


@dataclass(frozen=True)
class SlurmConfig:
    partition: str = ""
    account: str = ""
    qos: str = ""
    extra: tuple[str, ...] = ()
    python: str = ""
    resubmit: bool = True
    max_attempts: int = 20
    poll_seconds: float = 10.0
    allow_local_workspace: bool = False
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resources_for(self, stage: str, profile: str, gpu: bool) -> Resources:
        """Built-in values for the stage and profile, then the file's ``[slurm.resources.<stage>]``."""
        base = _FULL.get(stage, _TINY) if profile == "full" else _TINY
        if gpu and base.gpus == 0:
            base = replace(base, gpus=1)
        return replace(base, **self.resources.get(stage, {}))


@dataclass(frozen=True)
class WorkspaceConfig:
    backend: str = "local"
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


_SLURM_TYPES: dict[str, type | tuple[type, ...]] = {
    "partition": str, "account": str, "qos": str, "extra": list, "python": str, "resubmit": bool,
    "max_attempts": int, "poll_seconds": (int, float), "allow_local_workspace": bool, "resources": dict,
}
_RESOURCE_TYPES: dict[str, type] = {"gpus": int, "cpus": int, "mem": str, "time": str}


def load_config(root: Path) -> WorkspaceConfig:
    """The workspace's config.toml (defaults when there is none); ConfigError naming the bad key."""
    path = root / CONFIG_FILE
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return WorkspaceConfig()
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(data) - {"backend", "slurm"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: backend, slurm")
    backend = data.get("backend", "local")
    if backend not in BACKENDS:
        raise ConfigError(f"{path}: backend = {backend!r}; valid backends: {', '.join(BACKENDS)}")
    slurm = dict(data.get("slurm", {}))
    for key, value in slurm.items():
        expected = _SLURM_TYPES.get(key)
        if expected is None:
            raise ConfigError(f"{path}: unknown key slurm.{key}; known: {', '.join(_SLURM_TYPES)}")
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{path}: slurm.{key} = {value!r} has the wrong type")
    for stage, table in slurm.get("resources", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: slurm.resources.{stage} must be a table (gpus, cpus, mem, time)")
        for key, value in table.items():
            if key not in _RESOURCE_TYPES or not isinstance(value, _RESOURCE_TYPES[key]):
                raise ConfigError(f"{path}: slurm.resources.{stage}.{key} = {value!r}: expected one of "
                                  f"gpus (int), cpus (int), mem (str, e.g. '32G'), time (str, e.g. '24:00:00')")
    if "extra" in slurm:
        slurm["extra"] = tuple(str(option) for option in slurm["extra"])
    return WorkspaceConfig(backend, SlurmConfig(**slurm))
