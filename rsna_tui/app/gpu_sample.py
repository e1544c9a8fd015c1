"""One look at the machine for the GPUs screen: every NVML device and its processes, CPU and RAM.

Processes are matched to jobs by process group (a local job is its own group, see
``rsna_tui.jobs.local``); the rest are "other". Without NVML (no library, no driver, no GPU) the
sample says why and carries CPU and RAM only. Tests hand the app a fixed sampler instead (the GPU
is the one thing CI lacks).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import psutil


@dataclass
class Device:
    index: int
    name: str
    mem_used: int
    mem_total: int
    util: float | None
    temperature: float | None


@dataclass
class GpuProcess:
    device: int
    pid: int
    mem: int | None
    #: The job whose process group holds the process; None for "other".
    job_id: int | None = None
    command: str = ""


@dataclass
class MachineSample:
    devices: list[Device] = field(default_factory=list)
    processes: list[GpuProcess] = field(default_factory=list)
    #: Why there are no devices ('' when there are).
    note: str = ""
    cpu_percent: float = 0.0
    cpus: int = 1
    ram_used: int = 0
    ram_total: int = 0


def sample_machine() -> MachineSample:
    """Devices, their processes, CPU and RAM (never raises for a missing GPU)."""
    memory = psutil.virtual_memory()
    out = MachineSample(cpu_percent=psutil.cpu_percent(None), cpus=psutil.cpu_count() or 1,
                        ram_used=memory.total - memory.available, ram_total=memory.total)
    try:
        import pynvml
    except ImportError:
        out.note = "no NVML (nvidia-ml-py is not installed): CPU and RAM only"
        return out
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        out.note = f"no GPU: NVML did not start ({exc}): CPU and RAM only"
        return out
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory_info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.devices.append(Device(
                index, _text(pynvml.nvmlDeviceGetName(handle)), int(memory_info.used), int(memory_info.total),
                _safe(lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
                _safe(lambda: float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))),
            ))
            procs = _safe(lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(handle)) or []
            for proc in procs:
                out.processes.append(GpuProcess(index, int(proc.pid), int(proc.usedGpuMemory) if proc.usedGpuMemory else None))
        if not out.devices:
            out.note = "NVML sees no GPU: CPU and RAM only"
    finally:
        pynvml.nvmlShutdown()
    return out


def attribute(sample: MachineSample, groups: dict[int, int]) -> MachineSample:
    """Fill ``job_id`` (from ``{process group: job id}``) and the command of each GPU process."""
    for proc in sample.processes:
        try:
            proc.job_id = groups.get(os.getpgid(proc.pid))
        except OSError:
            proc.job_id = None
        try:
            proc.command = " ".join(psutil.Process(proc.pid).cmdline())[:120]
        except psutil.Error:
            proc.command = "?"
    return sample


def _safe(call):  # type: ignore[no-untyped-def]
    try:
        return call()
    except Exception:
        return None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
