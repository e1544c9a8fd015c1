"""What a stage function is handed: the workspace layout, its job folder and a reporter.

The folder names of a workspace are defined here, once, so that the engine stages (which find
each other's outputs by convention) and the application (which creates the folders and points
nnU-Net at them) agree.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.reporter import ListReporter, Reporter


@dataclass(frozen=True)
class WorkspaceLayout:
    """Paths inside one workspace folder; nothing is created here."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / "jobs.db"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def nnunet_raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def nnunet_preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def nnunet_results(self) -> Path:
        return self.root / "nnUNet_results"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / job_id

    def dataset(self, name_or_path: str) -> Path:
        """A dataset given by name (``datasets/<name>``, a folder or a link) or by path."""
        candidate = self.datasets / name_or_path
        if os.sep not in name_or_path and (candidate.exists() or not Path(name_or_path).exists()):
            return candidate
        return Path(name_or_path).expanduser().resolve()

    def converted(self, dataset: str, split: str) -> Path:
        """Output of ``convert`` for one dataset and split."""
        return self.root / "converted" / Path(dataset).name / split

    def rois(self, dataset: str, split: str) -> Path:
        """Output of ``roi`` (boxes and crops) for one dataset and split."""
        return self.root / "rois" / Path(dataset).name / split

    def nnunet_env(self) -> dict[str, str]:
        """The environment variables nnU-Net reads at import time."""
        return {
            "nnUNet_raw": str(self.nnunet_raw),
            "nnUNet_preprocessed": str(self.nnunet_preprocessed),
            "nnUNet_results": str(self.nnunet_results),
        }


@dataclass
class StageContext:
    """Everything a stage function receives besides its parameters."""

    workspace: WorkspaceLayout
    job_dir: Path
    reporter: Reporter = field(default_factory=ListReporter)
    #: True when the job was started with ``rsna-tui resume``: continue from a checkpoint.
    resume: bool = False
    job_id: str = "local"
    #: The stage table row this job runs (several stages share one function, e.g. train3d / finetune1).
    stage: str = ""
    #: Which share of a sharded stage this job runs (0 .. shards-1); None: the whole stage, which
    #: for a stage run with ``shards`` > 1 is the final step that merges the shards' results.
    shard: int | None = None

    @classmethod
    def for_folder(cls, root: Path | str, reporter: Reporter | None = None, job_id: str = "local") -> "StageContext":
        """A context on a workspace folder, for tests and library use (creates the job folder)."""
        layout = WorkspaceLayout(Path(root))
        job_dir = layout.job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        return cls(layout, job_dir, reporter or ListReporter(), job_id=job_id)


def input_path(name: str, value: str, what: str) -> Path:
    """The existing path a parameter filled by an upstream job holds (``roi.model``, ``init_from``, ...).

    Stages never look for earlier jobs: the planner (``rsna-tui run``) puts the upstream job's
    artefact path into the parameter, so a stage name, a job id or '' here means the stage was
    called without the planner.
    """
    path = Path(value).expanduser()
    if value and path.exists():
        return path
    raise FileNotFoundError(
        f"{name}={value!r} is not an existing path ({what} expected). Stages do not look up earlier jobs: "
        f"`rsna-tui run` fills {name} with the artefact path of the upstream job it plans (or of a job id "
        f"you give); a direct call needs the path itself"
    )
