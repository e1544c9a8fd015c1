"""The Slurm backend: each job is a batch script in its folder, submitted with ``sbatch --parsable``.

The script runs the same runner command as the local backend (``exec python -m rsna_tui.jobs.runner
<job folder>``), with Slurm's output going to the job's ``log.txt``; the resources come from the
workspace's ``config.toml`` (:mod:`rsna_tui.jobs.config`). ``--after`` links become
``--dependency=afterok:<ids>`` so a whole chain is submitted at once; ``--kill-on-invalid-dep``
makes Slurm drop a job whose dependency failed instead of leaving it pending forever. Jobs run
with ``--no-requeue``: a job ended by its time limit, by preemption or by a node failure is ended
in our records too and continued as a new linked attempt with resume semantics (the job manager
does that), because one job row is one attempt with one event file.

State: one ``squeue -t all`` call for every active job of a refresh (Slurm remembers ended jobs for
``MinJobAge`` seconds), then ``sacct`` (or ``sacct -c``, the job-completion file, where there is no
accounting database) for jobs squeue has forgotten; at most one call per ``poll_seconds``.
Cancel = ``scancel`` (Slurm sends SIGTERM, and SIGKILL after its ``KillWait``).

Job folders must be on a file system the compute nodes share: :meth:`SlurmExecutor.check_workspace`
refuses a workspace on a node-local one unless every node of the cluster is this host.
"""
from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import psutil

from rsna_tui.jobs.config import Resources, SlurmConfig, load_config
from rsna_tui.jobs.events import LOG, read_spec
from rsna_tui.jobs.executor import Launched, Observed
from rsna_tui.jobs.store import JobRow
from rsna_tui.workspace import Workspace

SCRIPT = "slurm.sh"
ARRAY_LINKS = "array"
COMMAND_TIMEOUT_S = 60.0
#: How long a cancel waits for Slurm to end the job beyond its KillWait.
CANCEL_WAIT_S = 30.0
POLL_S = 0.2
QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
#: Slurm's final states -> (our status, or None when the runner's finished event decides; resubmit?, why).
END_STATES: dict[str, tuple[str | None, bool, str]] = {
    "COMPLETED": (None, False, "exited 0"),
    "FAILED": ("failed", False, "the batch script failed"),
    "TIMEOUT": ("failed", True, "its time limit was reached"),
    "OUT_OF_MEMORY": ("failed", False, "it used more memory than it asked for (slurm.resources mem)"),
    "DEADLINE": ("failed", False, "its deadline passed"),
    "NODE_FAIL": ("lost", True, "its node failed or was set down"),
    "BOOT_FAIL": ("lost", True, "its node failed to boot"),
    "PREEMPTED": ("lost", True, "it was preempted"),
    "CANCELLED": ("cancelled", False, "cancelled"),
    "REVOKED": ("cancelled", False, "revoked by a sibling cluster"),
    "SPECIAL_EXIT": ("failed", False, "special exit"),
}
#: While a job is COMPLETING, its reason tells which final state it is heading for.
COMPLETING_REASONS = {"TimeLimit": "TIMEOUT", "NodeDown": "NODE_FAIL"}
#: File systems that compute nodes typically share with the login node.
SHARED_FS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "cephfs", "glusterfs",
             "fuse.glusterfs", "fuse.cephfs", "fuse.sshfs", "panfs", "wekafs", "9p", "virtiofs", "orangefs",
             "pvfs2", "afs", "nfsd", "fuse.beegfs", "fuse.juicefs", "fuse.gcsfuse", "fuse.lustre"}


class SlurmError(RuntimeError):
    """A Slurm command failed; the message has the command and Slurm's words."""


def short_host() -> str:
    return socket.gethostname().split(".")[0]


def file_system_of(path: Path) -> tuple[str, str]:
    """``(fstype, mount point)`` of the mount that holds ``path``."""
    path = path.resolve()
    best = ("", "/")
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint
        if (path == Path(mount) or Path(mount) in path.parents) and len(mount) >= len(best[1]):
            best = (part.fstype, mount)
    return best


def node_local_reason(path: Path, nodes: Sequence[str], host: str, fs: tuple[str, str]) -> str | None:
    """Why compute nodes cannot see ``path`` (None when they can, or when every node is this host)."""
    others = sorted(set(nodes) - {host})
    if not others:
        return None
    fstype, mount = fs
    if fstype in SHARED_FS:
        return None
    return (f"workspace {path} is on a node-local file system ({fstype or 'unknown'} at {mount}), which the "
            f"compute nodes ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) cannot read: put the "
            f"workspace on a shared file system (e.g. NFS, Lustre, GPFS: your home or project folder), or set "
            f"slurm.allow_local_workspace = true in config.toml if this path is shared after all")


def _slurm_env(env: dict[str, str]) -> dict[str, str]:
    """The job's environment without the SLURM_* variables of an enclosing job (they would confuse sbatch)."""
    return {k: v for k, v in env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}


def _check_path(path: Path) -> str:
    text = str(path)
    if any(c.isspace() for c in text):
        raise SlurmError(f"{text}: Slurm's #SBATCH lines cannot hold a path with blanks; use another workspace folder")
    return text


class SlurmExecutor:
    """Runs jobs as Slurm batch jobs of the cluster this host submits to."""

    name = "slurm"
    chains = True

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.host = short_host()
        #: Slurm commands run by this executor, by name (the benchmark reports them per refresh).
        self.commands: Counter[str] = Counter()
        self._config: SlurmConfig | None = None
        self._checked = False
        self._last_poll = 0.0
        self._seen: dict[str, tuple[str, str, str]] = {}
        #: Since when Slurm has not answered (None: it answered last time); the scheduler gives up after a while.
        self.failing_since: float | None = None

    @property
    def config(self) -> SlurmConfig:
        if self._config is None:
            self._config = load_config(self.workspace.root).slurm
        return self._config

    def _run(self, argv: list[str], env: dict[str, str] | None = None, ok: bool = False) -> subprocess.CompletedProcess[str]:
        self.commands[argv[0]] += 1
        try:
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                                    stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise SlurmError(f"{argv[0]} not found: the Slurm backend needs Slurm's client commands on PATH") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{' '.join(argv[:3])} did not answer in {COMMAND_TIMEOUT_S:.0f} s") from None
        if result.returncode != 0 and not ok:
            raise SlurmError(f"{shlex.join(argv[:6])}{' ...' if len(argv) > 6 else ''} failed "
                             f"(exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
        return result

    # -- the workspace ------------------------------------------------------------------------------

    def check_workspace(self) -> None:
        """Refuse a workspace the compute nodes cannot see (SlurmError with what to do)."""
        if self._checked or self.config.allow_local_workspace:
            return
        nodes = self._run(["sinfo", "-h", "-N", "-o", "%N"]).stdout.split()
        reason = node_local_reason(self.workspace.root, nodes, self.host, file_system_of(self.workspace.root))
        if reason:
            raise SlurmError(reason)
        self._checked = True

    # -- submitting -----------------------------------------------------------------------------------

    def _options(self, spec: dict, cwd: Path, job_name: str) -> list[str]:
        config = self.config
        res: Resources = config.resources_for(str(spec.get("stage", "")), str(spec.get("profile", "tiny")),
                                              bool(spec.get("gpu")))
        options = [f"--job-name={job_name}", f"--chdir={_check_path(cwd)}", "--open-mode=append",
                   f"--cpus-per-task={res.cpus}", f"--mem={res.mem}", f"--time={res.time}",
                   "--no-requeue", "--kill-on-invalid-dep=yes"]
        if res.gpus:
            options.append(f"--gres=gpu:{res.gpus}")
        for key in ("partition", "account", "qos"):
            if getattr(config, key):
                options.append(f"--{key}={getattr(config, key)}")
        return options + list(config.extra)

    def _script(self, options: list[str], body: list[str], title: str) -> str:
        lines = ["#!/bin/bash", f"# {title}: written by rsna-tui (rsna_tui.jobs.slurm), submitted with sbatch --parsable"]
        lines += [f"#SBATCH {option}" for option in options]
        return "\n".join(lines + body) + "\n"

    def _python(self) -> str:
        return self.config.python or sys.executable

    def _submit(self, script: Path, env: dict[str, str], after: Sequence[str]) -> str:
        self.check_workspace()
        argv = ["sbatch", "--parsable"]
        if after:
            argv.append("--dependency=afterok:" + ":".join(after))
        result = self._run(argv + [str(script)], env=_slurm_env(env))
        return result.stdout.strip().split(";")[0]

    def start(self, job_dir: Path, env: dict[str, str], cwd: Path, after: Sequence[str] = ()) -> Launched:
        spec = read_spec(job_dir)
        options = self._options(spec, cwd, f"rsna-{spec['id']}-{spec['stage']}")
        options.insert(1, f"--output={_check_path(job_dir / LOG)}")
        runner = shlex.join([self._python(), "-m", "rsna_tui.jobs.runner", str(job_dir)])
        script = job_dir / SCRIPT
        script.write_text(self._script(options, [f"exec {runner}"], f"job {spec['id']} ({spec['stage']})"))
        native = self._submit(script, env, after)
        return Launched(native, self.host, queued=True)

    def start_array(self, job_dirs: Sequence[Path], env: dict[str, str], cwd: Path,
                    after: Sequence[str] = ()) -> list[Launched]:
        """Submit several jobs of one stage as one ``--array``; task k runs ``job_dirs[k]``.

        The script lives in the first job's folder; ``array/<k>`` links there point at each task's
        folder so that Slurm's ``%a`` output pattern lands in every task's own ``log.txt``.
        """
        first = job_dirs[0]
        spec = read_spec(first)
        links = first / ARRAY_LINKS
        links.mkdir(exist_ok=True)
        for k, job_dir in enumerate(job_dirs):
            link = links / str(k)
            link.unlink(missing_ok=True)
            link.symlink_to(job_dir)
        options = self._options(spec, cwd, f"rsna-{spec['id']}-{spec['stage']}-array")
        options[1:1] = [f"--array=0-{len(job_dirs) - 1}", f"--output={_check_path(links)}/%a/{LOG}"]
        dirs = " ".join(shlex.quote(_check_path(d)) for d in job_dirs)
        body = [f"DIRS=({dirs})", f'exec {shlex.join([self._python(), "-m", "rsna_tui.jobs.runner"])} '
                                  '"${DIRS[$SLURM_ARRAY_TASK_ID]}"']
        ids = ", ".join(str(read_spec(d)["id"]) for d in job_dirs)
        script = first / SCRIPT
        script.write_text(self._script(options, body, f"jobs {ids} ({spec['stage']}) as one array"))
        native = self._submit(script, env, after)
        return [Launched(f"{native}_{k}", self.host, queued=True) for k in range(len(job_dirs))]

    # -- state ------------------------------------------------------------------------------------

    def _squeue(self, ids: Sequence[str]) -> dict[str, tuple[str, str, str]]:
        """``native id -> (state, reason, nodes)`` for the jobs Slurm still remembers."""
        result = self._run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%r|%N"], ok=True)
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return {}  # none of them is known any more
            raise SlurmError(f"squeue failed (exit {result.returncode}): {result.stderr.strip()}")
        rows = {}
        for line in result.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4:
                rows[parts[0]] = (parts[1], parts[2], parts[3])
        return rows

    def _sacct(self, ids: Sequence[str]) -> dict[str, tuple[str, str, str]]:
        """Final states of jobs squeue forgot: the accounting database, else the job-completion file."""
        base = ["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State,ExitCode,NodeList"]
        result = self._run(base, ok=True)
        if result.returncode != 0:
            result = self._run(base[:1] + ["-c"] + base[1:], ok=True)
        rows = {}
        for line in result.stdout.splitlines() if result.returncode == 0 else []:
            parts = line.strip().split("|")
            if len(parts) == 4:
                state = parts[1].split()[0] if parts[1] else ""
                rows[parts[0]] = (state, f"exit code {parts[2]}", parts[3])
        return rows

    def query(self, ids: Sequence[str], fresh: bool = False) -> dict[str, tuple[str, str, str]]:
        """Slurm's ``(state, reason, nodes)`` per native id; reuses the last answer within ``poll_seconds``."""
        ids = sorted(set(ids))
        if not fresh and time.monotonic() - self._last_poll < self.config.poll_seconds and all(i in self._seen for i in ids):
            return {i: self._seen[i] for i in ids}
        try:
            rows = self._squeue(ids)
        except SlurmError:
            self.failing_since = self.failing_since or time.time()
            raise
        self.failing_since = None
        missing = [i for i in ids if i not in rows]
        if missing:
            rows.update(self._sacct(missing))
        self._seen, self._last_poll = rows, time.monotonic()
        return rows

    def states(self, jobs: Sequence[JobRow]) -> dict[int, Observed]:
        launched = [j for j in jobs if j.native_id]
        if not launched:
            return {}
        rows = self.query([j.native_id for j in launched if j.native_id], fresh=any(j.terminal for j in launched))
        return {j.id: observe(rows.get(j.native_id or "")) for j in launched}

    def is_alive(self, job: JobRow) -> bool | None:
        return self.states([job]).get(job.id, Observed(False)).alive

    def cancel(self, job: JobRow, grace: float) -> bool:
        """``scancel``, then wait until Slurm has ended the job (its KillWait applies, not ``grace``)."""
        if not job.native_id:
            return False
        self._run(["scancel", job.native_id])
        deadline = time.monotonic() + grace + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            state = self.query([job.native_id], fresh=True).get(job.native_id, ("", "", ""))[0]
            if state not in QUEUED_STATES and state not in RUNNING_STATES:
                return True
            time.sleep(POLL_S)
        return False


def observe(row: tuple[str, str, str] | None) -> Observed:
    """Our reading of one Slurm ``(state, reason, nodes)``; None (Slurm knows nothing) = gone."""
    if row is None:
        return Observed(False, reason="Slurm has no record of it (squeue and sacct)")
    state, reason, nodes = row
    said = f"Slurm {state}" + (f" ({reason})" if reason and reason not in ("None", "(null)") else "")
    if state in QUEUED_STATES:
        return Observed(True, waiting=True, reason=said)
    heading = COMPLETING_REASONS.get(reason) if state == "COMPLETING" else None
    if state in RUNNING_STATES and heading is None:
        return Observed(True, reason=said + (f" on {nodes}" if nodes else ""))
    ended, resubmit, why = END_STATES.get(heading or state, ("failed", False, "unknown state"))
    if heading:
        said = f"Slurm {heading} ({reason})"
    if state == "CANCELLED" and reason == "DependencyNeverSatisfied":
        ended, why = "failed", "a job it runs after did not succeed"
    where = f" on {nodes}" if nodes and nodes not in ("None", "(null)", "None assigned") else ""
    # heading: still completing, so alive; the manager uses the verdict only for a job the runner ended
    return Observed(heading is not None, ended=ended, reason=f"{said}{where}: {why}", resubmit=resubmit)

