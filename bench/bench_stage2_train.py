"""Benchmark of the tiny stage-2 trainings of ``tests/engine/test_stage2_train.py``, run as jobs.

The test module used to assert that its three trainings stay under 600 s; a time limit does not belong
in a test (it fails on a busy machine and passes a slow change on a fast one), so the figures are
printed here instead, beside a baseline measured in the same run:

  job       ``rsna-tui run --stage S --follow`` wall seconds (process start, imports, nnU-Net dataset,
            planning and preprocessing for train3d, training, validation, checkpoints)
  baseline  the same number of optimizer steps (and validation forwards) of the same network and
            ``StageTwoLoss`` on a random batch in this process, one thread: what the arithmetic costs

The ratio job / baseline is the runner's and nnU-Net's overhead at this toy size.

    .venv/bin/python bench/bench_stage2_train.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.engine.stage2_jobs import SMALL, prepare_stage2_workspace, run_stage  # noqa: E402

SCHEDULE = {"train3d": {"epochs": 3, "iterations": 3, "val_iterations": 1},
            "finetune1": {"epochs": 1, "iterations": 2, "val_iterations": 1},
            "finetune2": {"epochs": 1, "iterations": 2, "val_iterations": 1}}
COHORT = {"n": 12, "seed": 7, "size": 32, "test_fraction": 0.25, "defects": False, "test_tags_only": False}


def baseline_seconds(network_json: Path, steps: int, forwards: int) -> float:
    """``steps`` SGD steps and ``forwards`` no-grad forwards of the job's network, batch 2 at 16^3."""
    import torch

    from engine.stage2.losses import StageTwoLoss
    from engine.stage2.model_files import build_network, read_network_json

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        network = build_network(read_network_json(network_json.parent), deep_supervision=True)
        loss = StageTwoLoss(len(network(torch.zeros(1, 1, 16, 16, 16)).seg1))
        optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
        x, labels = torch.randn(2, 1, 16, 16, 16), torch.randint(0, 27, (2, 1, 16, 16, 16))
        targets = (torch.ones(2), torch.zeros(2, 13), torch.tensor([0, 1]))
        started = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad()
            loss(network(x), labels, *targets).total.backward()
            optimizer.step()
        with torch.no_grad():
            for _ in range(forwards):
                loss(network(x), labels, *targets)
        return time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    from engine.context import StageContext
    from engine.data.demo import run as demo

    with tempfile.TemporaryDirectory(prefix="bench_stage2_") as tmp:
        root = Path(tmp)
        demo({**COHORT, "out": str(root / "demo")}, StageContext.for_folder(root / "demo-ws"))
        started = time.perf_counter()
        prepare_stage2_workspace(root / "ws", root / "demo")
        print(f"convert + crops: {time.perf_counter() - started:.1f} s")
        start_from = ""
        total = 0.0
        print(f"{'stage':10} {'job s':>8} {'baseline s':>11} {'ratio':>7}")
        for stage, schedule in SCHEDULE.items():
            params = {**SMALL, **schedule, **({"init_from": start_from} if start_from else {})}
            started = time.perf_counter()
            _, events = run_stage(root / "ws", stage, params)
            seconds = time.perf_counter() - started
            total += seconds
            found = {e["name"]: e["path"] for e in events if e["type"] == "artefact"}
            start_from = start_from or found["checkpoint"]
            base = baseline_seconds(Path(found["network"]), schedule["epochs"] * schedule["iterations"],
                                    schedule["epochs"] * schedule["val_iterations"])
            print(f"{stage:10} {seconds:8.1f} {base:11.2f} {seconds / base:7.0f}")
        print(f"three trainings: {total:.1f} s (the test module used to require < 600 s)")


if __name__ == "__main__":
    main()
