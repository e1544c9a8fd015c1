"""Resource sampling inside the job process: CPU / RSS of the process tree, and GPU via NVML.

Runs as a daemon thread of the runner and emits ``resource`` events:
``cpu_percent`` (sum over the tree, 100 = one core), ``rss_bytes``, and with NVML and a GPU also
``gpu_mem_bytes`` / ``gpu_util`` (used memory and mean utilisation of the job's devices) and
``proc_gpu_mem_bytes`` (memory held by the tree's own processes). Without NVML or a GPU the GPU
fields are simply absent; sampling never fails the job.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable

import psutil

from rsna_tui.jobs.gpus import visible_devices

INTERVAL_VAR = "RSNA_TUI_MONITOR_INTERVAL"
DEFAULT_INTERVAL_S = 5.0


class GpuProbe:
    """NVML handles of the devices a job may use; ``None`` fields when unavailable."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no library, no driver, no GPU: CPU/RAM only
            return
        self._nvml = pynvml
        try:
            count = pynvml.nvmlDeviceGetCount()
            wanted = visible_devices() if "CUDA_VISIBLE_DEVICES" in os.environ else [str(i) for i in range(count)]
            for name in wanted:
                if name.isdigit() and int(name) < count:
                    self.handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(name)))
                elif name.startswith(("GPU-", "MIG-")):
                    self.handles.append(pynvml.nvmlDeviceGetHandleByUUID(name))
        except Exception:
            self.handles = []

    def sample(self, pids: set[int]) -> dict[str, Any]:
        if not self.handles:
            return {}
        nvml = self._nvml
        used, utils, proc_mem = 0, [], 0
        for handle in self.handles:
            try:
                used += int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
                utils.append(float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid in pids and proc.usedGpuMemory:
                        proc_mem += int(proc.usedGpuMemory)
            except Exception:
                continue
        return {
            "gpu_mem_bytes": used,
            "gpu_util": sum(utils) / len(utils) if utils else None,
            "proc_gpu_mem_bytes": proc_mem,
        }

    def close(self) -> None:
        if self.handles:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass


class TreeSampler:
    """CPU and RSS of a process and all its descendants; CPU needs two looks, so it keeps state."""

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        self._known: dict[int, psutil.Process] = {}

    def sample(self) -> tuple[dict[str, Any], set[int]]:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return {"cpu_percent": 0.0, "rss_bytes": 0}, set()
        cpu, rss, pids = 0.0, 0, set()
        current: dict[int, psutil.Process] = {}
        for proc in procs:
            proc = self._known.get(proc.pid, proc)  # keep the object: cpu_percent is since last call
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue
            current[proc.pid] = proc
            pids.add(proc.pid)
        self._known = current
        return {"cpu_percent": round(cpu, 1), "rss_bytes": rss}, pids


class ResourceMonitor(threading.Thread):
    """Samples every ``interval`` seconds until stopped, handing each sample to ``emit``."""

    def __init__(self, emit: Callable[..., None], interval: float | None = None, root_pid: int | None = None) -> None:
        super().__init__(name="resource-monitor", daemon=True)
        self.emit = emit
        self.interval = interval if interval is not None else float(os.environ.get(INTERVAL_VAR, DEFAULT_INTERVAL_S))
        self.tree = TreeSampler(root_pid or os.getpid())
        self._stop_event = threading.Event()

    def run(self) -> None:
        gpu = GpuProbe()
        try:
            self.tree.sample()  # prime the CPU counters
            while not self._stop_event.wait(self.interval):
                sample, pids = self.tree.sample()
                sample.update(gpu.sample(pids))
                self.emit("resource", **sample)
        finally:
            gpu.close()

    def stop(self) -> None:
        self._stop_event.set()
