"""Which GPUs this machine shows a job, via ``CUDA_VISIBLE_DEVICES`` or NVML.

The scheduler gives each GPU-heavy job one slot and, when there are real GPUs, pins the job to
that device. With no GPU there is still one slot, so GPU stages run one after another on the CPU
(the demo) instead of all at once.
"""
from __future__ import annotations

import os

SLOTS_VAR = "RSNA_TUI_GPU_SLOTS"


def nvml_device_count() -> int:
    """Devices NVML sees; 0 without the library, the driver or a GPU."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


def visible_devices(environ: dict[str, str] | None = None) -> list[str]:
    """Device names a job may be pinned to (CUDA_VISIBLE_DEVICES entries, or NVML indices)."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(nvml_device_count())]


def gpu_slots(environ: dict[str, str] | None = None) -> int:
    """How many GPU-heavy jobs may run at once: ``RSNA_TUI_GPU_SLOTS``, else one per device, else 1."""
    env = os.environ if environ is None else environ
    if env.get(SLOTS_VAR):
        return max(1, int(env[SLOTS_VAR]))
    return max(1, len(visible_devices(env)))
