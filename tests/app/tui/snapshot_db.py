"""A deterministic workspace for the app's snapshots: fixed times, every status, curves and samples.

Written through the real store (schema, JSON columns); no process runs. The running jobs are on
another host, so that no liveness check can mark them lost, and the app opens the database
read-only (no fold, no scheduler) with a fixed clock: the same picture every time.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

from rsna_tui.app.gpu_sample import Device, GpuProcess, MachineSample
from rsna_tui.jobs.store import JobRow, Store

T0 = 1767225600.0  # 2026-01-01 00:00 UTC
NOW = T0 + 6 * 3600
ROOT = Path("/tmp/rsna-tui-snapshots")
HOST = "gpu-node-7"

_JOBS = [
    # id, stage, status, start, end, progress, message / error, extra
    (1, "demo-data", "succeeded", 0, 8, 1.0, "wrote 40 series (17 with aneurysms, 10 held out)", {}),
    (2, "convert", "succeeded", 10, 15, 1.0, "fallbacks: multiframe 1", {}),
    (3, "train2d", "succeeded", 20, 1800, 1.0, "training finished after 29.6 min", {}),
    (4, "train3d", "running", 1900, None, 0.42, "epoch 42/100", {"native_id": "4242"}),
    (5, "train3d", "failed", 1850, 1870, None, "CUDA out of memory (tried to allocate 2.00 GiB)", {}),
    (6, "finetune1", "queued", None, None, None, "", {"depends_on": [4]}),
    (7, "roi", "cancelled", 1810, 1830, 0.3, "cancelled; killed after the grace period", {}),
    (8, "predict", "lost", 1700, 1750, 0.5, "process 777 on gpu-node-7 ended without a finished event", {}),
    (9, "train3d", "succeeded", 1880, 1890, 1.0, "retry of 5 with batch_size=1", {"parent_id": 5, "attempt": 2}),
]


def build(root: Path = ROOT) -> Path:
    """Write the workspace at ``root`` (always the same path: it is in the picture); returns the db."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "jobs").mkdir(parents=True)
    db = root / "jobs.db"
    with Store(db) as store:
        for job_id, stage, status, start, end, progress, note, extra in _JOBS:
            failed = status in ("failed", "lost", "cancelled")
            job = JobRow(
                id=0, stage=stage, profile="full", status=status, created_at=T0 + (start or 1900) - 5,
                params={"dataset": "demo", "epochs": 100, "batch_size": 2, "fold": 0},
                started_at=T0 + start if start is not None else None, finished_at=T0 + end if end else None,
                progress=progress, message=None if failed else note, error=note if failed else None,
                host=HOST if start is not None else None, gpu=stage.startswith(("train", "fine", "roi", "predict")),
                **extra,
            )
            store.insert_job(job)
            assert job.id == job_id
        with store.write() as conn:
            rows = []
            for job_id, epochs in ((3, 50), (4, 42)):
                for epoch in range(epochs):
                    t = T0 + 1900 + epoch * 60
                    loss = 1.2 * math.exp(-epoch / 15) + 0.05 * math.sin(epoch)
                    rows += [
                        (job_id, epoch, "train_loss", -loss, t), (job_id, epoch, "val_loss", -loss * 0.9 + 0.05, t),
                        (job_id, epoch, "pseudo_dice", 1 - math.exp(-epoch / 12), t),
                        (job_id, epoch, "ema_pseudo_dice", 1 - math.exp(-epoch / 14), t),
                        (job_id, epoch, "lr", 0.01 * (1 - epoch / 100) ** 0.9, t), (job_id, epoch, "epoch_time", 58 + epoch % 5, t),
                    ]
            conn.executemany("INSERT INTO metrics (job_id, step, name, value, t) VALUES (?, ?, ?, ?, ?)", rows)
            samples = [
                (4, T0 + 1900 + i * 30, 180 + 20 * math.sin(i / 4), 6 * 2**30 + i * 2**24, int((60 + 8 * math.sin(i / 9)) * 2**30),
                 85 + 10 * math.sin(i / 3), int((52 + 6 * math.sin(i / 9)) * 2**30))
                for i in range(80)
            ]
            conn.executemany(
                "INSERT INTO resource_samples (job_id, t, cpu_percent, rss_bytes, gpu_mem_bytes, gpu_util, proc_gpu_mem_bytes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", samples,
            )
            conn.executemany("INSERT INTO artefacts (job_id, name, path, t) VALUES (?, ?, ?, ?)", [
                (3, "model", "/data/ws/nnUNet_results/Dataset101_VesselBox2D/nnUNetTrainer__2d", T0 + 1800),
                (4, "checkpoint", "/data/ws/nnUNet_results/Dataset201_Stage2Cube/fold_0/checkpoint_latest.pth", T0 + 4300),
            ])
    log = root / "jobs" / "4"
    log.mkdir()
    (log / "log.txt").write_text("".join(f"epoch {e}: train_loss {-1.2 * math.exp(-e / 15):.4f} lr {0.01 * (1 - e / 100) ** 0.9:.5f}\n" for e in range(42)))
    return db


def fake_machine() -> MachineSample:
    """One H100 with our job's process and somebody else's (the GPU is what CI lacks)."""
    return MachineSample(
        devices=[Device(0, "NVIDIA H100 80GB HBM3", 61 * 2**30, 80 * 2**30, 87.0, 64.0)],
        processes=[
            GpuProcess(0, 4242, 52 * 2**30, job_id=4, command="python -m rsna_tui.jobs.runner /data/ws/jobs/4"),
            GpuProcess(0, 9001, 8 * 2**30, job_id=None, command="python notebook_kernel.py"),
        ],
        cpu_percent=23.0, cpus=16, ram_used=40 * 2**30, ram_total=128 * 2**30,
    )
