"""A real single-node Slurm for the tests and the benchmark: munge + slurmctld + slurmd in one folder.

Debian's packages (``munge slurmctld slurmd slurm-client``, Slurm 22.05) are installed with apt-get
when missing. Every file of the cluster lives in a throw-away folder under /tmp (munged refuses a
socket whose parent folders are not world-executable, which rules out pytest's ``tmp_path``); the
daemons run in the foreground mode, each in its own session, and are stopped by the PIDs kept
here (their own pid files are truncated at start, so they cannot be polled). Clients find the
cluster through ``SLURM_CONF``. Two fake GPUs (character devices: links to /dev/null) let
``--gres=gpu:1`` jobs run. The facts behind each setting are in ``shared/docs/SLURM.md``.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")
APT_LINE = "apt-get install -y --no-install-recommends " + " ".join(PACKAGES)
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue")
NODE_CPUS = 8
NODE_MEMORY_MB = 8000
GPUS = 2
START_TIMEOUT_S = 30.0


class ClusterUnavailable(RuntimeError):
    """Slurm cannot be started here (not root, no package); the tests skip with this reason."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_packages() -> None:
    """Install Debian's Slurm and munge when a daemon is missing (root only)."""
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS):
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable(f"Slurm is not installed and installing it needs root: {APT_LINE}")
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("Slurm is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = APT_LINE.split()
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ClusterUnavailable(f"{APT_LINE} failed: {result.stderr.strip()[-300:]}")


@dataclass
class SlurmCluster:
    """One running cluster; ``env`` is what a client needs (``SLURM_CONF``)."""

    root: Path
    host: str
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    @property
    def jobcomp(self) -> Path:
        return self.root / "log" / "jobcomp.log"

    @classmethod
    def start(cls) -> "SlurmCluster":
        if os.geteuid() != 0:
            raise ClusterUnavailable("a private Slurm needs root (slurmd runs jobs as their submitter)")
        ensure_packages()
        root = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
        root.chmod(0o755)
        cluster = cls(root, socket.gethostname().split(".")[0])
        try:
            cluster._write_files()
            cluster._start_daemons()
            cluster.wait_idle()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _write_files(self) -> None:
        r = self.root
        for sub in ("etc", "munge", "state", "spool", "log", "dev"):
            (r / sub).mkdir()
            (r / sub).chmod(0o755)  # munged needs a world-searchable socket folder, whatever the umask
        (r / "etc").chmod(0o700)
        key = r / "etc" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for i in range(GPUS):
            (r / "dev" / f"gpu{i}").symlink_to("/dev/null")
        h = self.host
        self.conf.write_text("\n".join([
            "ClusterName=ci",
            f"SlurmctldHost={h}(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={r}/munge/munge.socket,cred_expire=30",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool/slurmd-%n",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log", f"SlurmdLogFile={r}/log/slurmd.log",
            "MailProg=/bin/true", "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SlurmdParameters=config_overrides",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/filetxt", f"JobCompLoc={self.jobcomp}",
            "SchedulerParameters=sched_interval=5,bf_interval=5",
            "ReturnToService=1", "MinJobAge=600", "KillWait=5", "SlurmdTimeout=30",
            "GresTypes=gpu",
            f"NodeName={h} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} Gres=gpu:{GPUS} State=UNKNOWN",
            f"PartitionName=debug Nodes={h} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        (r / "gres.conf").write_text(f"NodeName={h} Name=gpu File={r}/dev/gpu[0-{GPUS - 1}]\n")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.root / "log" / f"{name}.out").open("ab")
        with log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **self.env}, start_new_session=True)
        self.pids[name] = proc.pid

    def _start_daemons(self) -> None:
        r = self.root
        self._spawn("munged", ["munged", "-F", f"--key-file={r}/etc/munge.key", f"--socket={r}/munge/munge.socket",
                               f"--pid-file={r}/munge/munged.pid", f"--seed-file={r}/munge/munge.seed",
                               f"--log-file={r}/log/munged.log"])
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (r / "munge" / "munge.socket").exists():
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"munged did not start: {self._log_tail('munged')}")
            time.sleep(0.05)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.host, "-f", str(self.conf)])

    def _log_tail(self, name: str) -> str:
        texts = []
        for path in (self.root / "log" / f"{name}.out", self.root / "log" / f"{name}.log"):
            if path.exists():
                texts.append(path.read_text(errors="replace")[-600:])
        return " | ".join(texts) or "(no log)"

    def scontrol(self, *args: str) -> str:
        result = subprocess.run(["scontrol", *args], env={**os.environ, **self.env}, capture_output=True,
                                text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"scontrol {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def node_state(self) -> str:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env={**os.environ, **self.env},
                                capture_output=True, text=True, timeout=30)
        return result.stdout.strip()

    def wait_idle(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until the node takes jobs (``idle``, or ``mixed`` / ``allocated`` with jobs on it)."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for name, pid in self.pids.items():
                if _exited(pid):
                    raise ClusterUnavailable(f"{name} exited at start: {self._log_tail(name)}")
            state = self.node_state()
            if state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.2)
        raise ClusterUnavailable(f"node not idle after {timeout:.0f} s (state {state!r}): {self._log_tail('slurmctld')}")

    def cancel_all(self) -> None:
        """``scancel`` every job of the cluster (between tests)."""
        subprocess.run(["scancel", "--full", "--quiet", "-u", "root"], env={**os.environ, **self.env},
                       capture_output=True, timeout=30)

    def stop(self) -> None:
        """Stop the daemons by PID (SIGTERM, SIGKILL after 15 s) and delete the folder."""
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None or _exited(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15.0
            while not _exited(pid):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)


def _exited(pid: int) -> bool:
    """Whether our daemon ``pid`` has exited (and reap it)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True
