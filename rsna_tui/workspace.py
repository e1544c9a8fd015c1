"""The workspace: which folder, which folders inside it, and the environment a job runs in.

Folder names come from :class:`engine.context.WorkspaceLayout` only, so that the engine stages
(which find each other's outputs by convention) and the application agree. Nothing is created
until it is needed: opening the store creates the root, submitting a job creates its folder,
launching one creates the nnU-Net folders.

Permissions: a workspace holds paths and predictions of patient scans, so it is private by
default: folders 0700, files 0600 (``jobs.db``, job folders, logs, predictions, models). Every
process that writes into it (CLI, TUI, scheduler, job) sets its umask with :meth:`apply_umask`:
- a umask that closes everything to others (``027``, ``007``, ``077``) is a deliberate choice and
  is kept, so ``umask 027`` lets the user's group read the workspace;
- any other umask (the usual ``022`` / ``002``) is tightened to ``077``;
- a shared workspace (``rsna-tui --shared-group GROUP``: the root folder belongs to GROUP with
  mode 2770, setgid so that everything created inside inherits the group) uses ``007``: folders
  2770, files 0660 for the group, nothing for others. The root folder's group and setgid bit are
  the setting, so later commands need no option.
"""
from __future__ import annotations

import grp
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from engine.context import WorkspaceLayout

ENV_VAR = "RSNA_TUI_WORKSPACE"
APP_NAME = "rsna-tui"
SHARED_UMASK = 0o007
SHARED_ROOT_MODE = 0o2770


def private_umask(current: int) -> int:
    """The umask of a private workspace: ``current`` if it already shuts others out, else ``| 077``."""
    return current if current & 0o007 == 0o007 else current | 0o077


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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

    @property
    def shared_gid(self) -> int | None:
        """The group a shared workspace belongs to (root setgid with group rwx), else None."""
        try:
            st = self.root.stat()
        except OSError:
            return None
        shared = bool(st.st_mode & stat.S_ISGID) and (st.st_mode & 0o070) == 0o070
        return st.st_gid if shared else None

    def umask(self) -> int:
        """The umask for files of this workspace (see the module's docstring)."""
        return SHARED_UMASK if self.shared_gid is not None else private_umask(current_umask())

    def apply_umask(self) -> int:
        """Set this process's umask to the workspace's; returns it. Child processes inherit it."""
        mask = self.umask()
        os.umask(mask)
        return mask

    def share_with(self, group: str) -> int:
        """Make the workspace (and what it holds already) read-write for ``group``; returns its gid.

        Raises ValueError for an unknown group and PermissionError when the user is not in it.
        """
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"--shared-group {group}: no such group (see `getent group`)") from None
        self.ensure_root()
        for folder, dirs, files in os.walk(self.root):
            for path in [folder, *(os.path.join(folder, f) for f in files)]:
                if os.path.islink(path):
                    continue
                os.chown(path, -1, gid)
                mode = stat.S_IMODE(os.stat(path).st_mode)
                extra = 0o2070 if os.path.isdir(path) else 0o060 | (0o010 if mode & 0o100 else 0)
                os.chmod(path, (mode & ~0o007) | extra)
        os.chmod(self.root, SHARED_ROOT_MODE)
        self.apply_umask()
        return gid

    def ensure_root(self) -> Path:
        """The root folder; a new one gets the workspace's mode whatever this process's umask."""
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o777 & ~self.umask())
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
