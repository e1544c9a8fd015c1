"""Resource sampling: the process tree for real, the GPU through a stand-in NVML (CI has no GPU)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path

import psutil
import pytest

from rsna_tui.jobs.monitor import GpuProbe, ResourceMonitor, TreeSampler


def test_tree_sampler_counts_children(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "x = bytearray(64 * 2**20); import time; time.sleep(30)"])
    try:
        sampler = TreeSampler(os.getpid())
        sampler.sample()
        for _ in range(50):
            sample, pids = sampler.sample()
            if child.pid in pids and sample["rss_bytes"] > 64 * 2**20:
                break
            time.sleep(0.1)
        assert child.pid in pids and os.getpid() in pids
        assert sample["rss_bytes"] > 64 * 2**20
    finally:
        child.kill()
        child.wait()


def _tree_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def test_tree_sampler_cpu_is_the_trees_cpu_time_over_wall_time() -> None:
    """A child that spins: the sampled percentage is the tree's CPU seconds per wall second, measured
    here from psutil's counters over the same interval (not a bound that any number passes)."""
    spin = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        sampler = TreeSampler(os.getpid())
        pids = [os.getpid(), child.pid]
        sampler.sample()  # primes the counters
        cpu0, wall0 = _tree_cpu_seconds(pids), time.monotonic()
        time.sleep(1.5)
        sample, seen = sampler.sample()
        cpu1, wall1 = _tree_cpu_seconds(pids), time.monotonic()
        expected = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
        assert child.pid in seen
        assert expected > 10.0, f"the spinning child got {expected:.0f}% of a core: the machine is too busy to tell"
        assert sample["cpu_percent"] == pytest.approx(expected, abs=max(10.0, 0.15 * expected)), (sample, expected)
    finally:
        child.kill()
        child.wait()


class _Memory:
    def __init__(self, used: int) -> None:
        self.used = used


class _Util:
    def __init__(self, gpu: float) -> None:
        self.gpu = gpu


class _Proc:
    def __init__(self, pid: int, mem: int) -> None:
        self.pid, self.usedGpuMemory = pid, mem


def _fake_nvml(devices: list[tuple[int, float, list[tuple[int, int]]]]) -> types.ModuleType:
    """A stand-in for ``pynvml`` with the calls the monitor makes."""
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = RuntimeError
    nvml.nvmlInit = lambda: None
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetCount = lambda: len(devices)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetMemoryInfo = lambda h: _Memory(devices[h][0])
    nvml.nvmlDeviceGetUtilizationRates = lambda h: _Util(devices[h][1])
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda h: [_Proc(p, m) for p, m in devices[h][2]]
    return nvml


def test_gpu_probe_sums_the_job_devices_and_its_own_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [(10 * 2**30, 90.0, [(111, 5 * 2**30)]), (3 * 2**30, 40.0, [(222, 2**30), (333, 2**29)])]
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(devices))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    probe = GpuProbe()
    assert probe.sample({222, 444}) == {"gpu_mem_bytes": 3 * 2**30, "gpu_util": 40.0, "proc_gpu_mem_bytes": 2**30}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    both = GpuProbe().sample({111, 333})
    assert both == {"gpu_mem_bytes": 13 * 2**30, "gpu_util": 65.0, "proc_gpu_mem_bytes": 5 * 2**30 + 2**29}


def test_no_nvml_means_cpu_and_ram_only(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = types.ModuleType("pynvml")

    def fail() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    broken.nvmlInit = fail
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    events: list[tuple[str, dict]] = []
    monitor = ResourceMonitor(lambda kind, **fields: events.append((kind, fields)), interval=0.05)
    monitor.start()
    time.sleep(0.4)
    monitor.stop()
    monitor.join(timeout=2)
    assert len(events) >= 3 and all(kind == "resource" for kind, _ in events)
    assert all(set(fields) == {"cpu_percent", "rss_bytes"} and fields["rss_bytes"] > 0 for _, fields in events)
