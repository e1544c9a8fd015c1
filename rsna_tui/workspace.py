"""The workspace: which folder, which folders inside it, and the environment a job runs in.

Folder names come from :class:`engine.context.WorkspaceLayout` only, so that the engine stages
(which find each other's outputs by convention) and the application agree. Nothing is created
until it is needed: opening the store creates the root, submitting a job creates its folder,
launching one creates the nnU-Net folders.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.context import WorkspaceLayout

ENV_VAR = "RSNA_TUI_WORKSPACE"
APP_NAME = "rsna-tui"


def default_root() -> Path:
    """The per-user default workspace (platformdirs' user data folder)."""
    import platformdirs  # only needed when neither the option nor the variable is given

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def choose_root(option: str | Path | None = None) -> Path:
    """``--workspace`` wins over ``RSNA_TUI_WORKSPACE``, which wins over the user data folder."""
    if option:
        chosen = Path(option)
    elif os.environ.get(ENV_VAR):
        chosen = Path(os.environ[ENV_VAR])
    else:
        chosen = default_root()
    return chosen.expanduser().resolve()


def nnunet_process_defaults(cores: int | None = None) -> dict[str, str]:
    """nnU-Net worker counts sized to the machine.

    nnU-Net's defaults (8 preprocessing and 12 augmentation workers) swamp small machines; half the
    cores for preprocessing and all but two for augmentation gives 1 / 0 on two cores and 8 / 12
    on a 16-core GPU server.
    """
    n = cores or os.cpu_count() or 1
    return {
        "nnUNet_def_n_proc": str(max(1, n // 2)),
        "nnUNet_n_proc_DA": str(max(0, min(12, n - 2))),
    }


@dataclass(frozen=True)
class Workspace:
    """One workspace folder; :attr:`layout` names everything inside it."""

    root: Path

    @classmethod
    def choose(cls, option: str | Path | None = None) -> "Workspace":
        return cls(choose_root(option))

    @property
    def layout(self) -> WorkspaceLayout:
        return WorkspaceLayout(self.root)

    @property
    def db_path(self) -> Path:
        return self.layout.db

    @property
    def scheduler_lock(self) -> Path:
        """Held by the one scheduler process that starts queued jobs."""
        return self.root / "scheduler.lock"

    @property
    def scheduler_log(self) -> Path:
        return self.root / "scheduler.log"

    def job_dir(self, job_id: int | str) -> Path:
        return self.layout.job_dir(str(job_id))

    def ensure_root(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    def ensure_job_dir(self, job_id: int | str) -> Path:
        path = self.job_dir(job_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ensure_nnunet_dirs(self) -> None:
        """nnU-Net writes below these but expects them to exist."""
        layout = self.layout
        for path in (layout.nnunet_raw, layout.nnunet_preprocessed, layout.nnunet_results):
            path.mkdir(parents=True, exist_ok=True)

    def job_environment(self, base: dict[str, str] | None = None, cores: int | None = None) -> dict[str, str]:
        """The environment of a job process: ``base`` (default: ours) plus the nnU-Net variables.

        The nnU-Net folders always point into this workspace; the worker counts are defaults that
        a user's own environment overrides. Output is unbuffered so that ``log.txt`` follows live.
        """
        env = dict(os.environ if base is None else base)
        env.update(self.layout.nnunet_env())
        for key, value in nnunet_process_defaults(cores).items():
            env.setdefault(key, value)
        env["PYTHONUNBUFFERED"] = "1"
        env[ENV_VAR] = str(self.root)
        return env
