"""Test-only stages, registered through ``RSNA_TUI_EXTRA_STAGES=tests.app.stages_for_tests:STAGES``.

They exercise the job machinery with real processes but no model: sleeping, failing, spawning
child processes (one of which ignores SIGTERM), reporting metrics, writing a predictions CSV and
filling the disk. ``test-make -> test-use -> test-top`` is a small graph for the planner:
``test-use.source`` is filled with ``test-make``'s artefact, ``test-top`` reads ``test-use``'s output
by convention; ``test-pool`` opens fork pools the way nnU-Net does.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from engine.context import StageContext
from engine.labels import LABEL_COLUMNS
from engine.stages import PROFILES, Input, Param, ParameterError, Stage


@dataclass(frozen=True)
class TestStage(Stage):
    """A stage whose defaults live here instead of engine/profiles.toml."""

    values: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def defaults(self, profile: str = "tiny") -> dict[str, Any]:
        if profile not in PROFILES:  # every profile gives the same values here
            raise ParameterError(f"unknown profile {profile!r}")
        return {p.name: p.parse(self.values[p.name]) for p in self.params}


def sleeper(params: dict[str, Any], ctx: StageContext) -> None:
    """Report a few steps, sleeping between them; fail at the end when asked to."""
    steps = params["steps"]
    for step in range(steps):
        ctx.reporter.progress(step, steps, f"step {step}")
        ctx.reporter.metric("loss", 1.0 / (step + 1), step)
        time.sleep(params["seconds"] / max(1, steps))
    ctx.reporter.progress(steps, steps, "done")
    ctx.reporter.log(f"slept {params['seconds']} s in {os.getcwd()}")
    ctx.reporter.log(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')} nnUNet_raw={os.environ['nnUNet_raw']}")
    (ctx.job_dir / "marker.txt").write_text(str(ctx.job_id))
    ctx.reporter.artefact("marker", ctx.job_dir / "marker.txt")
    if params["fail"]:
        raise RuntimeError("asked to fail")


def trainer(params: dict[str, Any], ctx: StageContext) -> None:
    """Epochs of training-like metrics, a log line each, and a checkpoint artefact."""
    epochs = params["epochs"]
    checkpoint = ctx.job_dir / "checkpoint.txt"
    ctx.reporter.log("resuming" if ctx.resume else "from scratch")
    for epoch in range(epochs):
        loss = 1.0 / (epoch + 1)
        for name, value in (("train_loss", loss), ("val_loss", loss * 1.1), ("pseudo_dice", 1 - loss),
                            ("ema_pseudo_dice", 1 - loss * 1.2), ("lr", 0.01 * (1 - epoch / epochs)),
                            ("epoch_time", params["seconds"])):
            ctx.reporter.metric(name, value, epoch)
        ctx.reporter.progress(epoch + 1, epochs, f"epoch {epoch}")
        ctx.reporter.log(f"epoch {epoch}: train_loss {loss:.4f}")
        checkpoint.write_text(str(epoch + 1))
        time.sleep(params["seconds"])
    ctx.reporter.artefact("checkpoint", checkpoint)


def spawner(params: dict[str, Any], ctx: StageContext) -> None:
    """Start child processes (one ignores SIGTERM, one has a child of its own), wait, then end as
    ``end`` says: ``return``, ``raise`` (an exception) or ``exit`` (``sys.exit(3)``)."""
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    nested = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"
    children = [
        subprocess.Popen([sys.executable, "-c", stubborn]),
        subprocess.Popen([sys.executable, "-c", nested]),
        subprocess.Popen(["sleep", "600"]),
    ]
    pids_file = ctx.job_dir / "children.txt"
    pids_file.write_text("\n".join(str(c.pid) for c in children))
    ctx.reporter.log(f"children {[c.pid for c in children]}")
    time.sleep(params["seconds"])
    if params["end"] == "raise":
        raise RuntimeError("spawner asked to raise")
    if params["end"] == "exit":
        sys.exit(3)


def filler(params: dict[str, Any], ctx: StageContext) -> None:
    """Write ``first.bin`` (small), then ``second.bin`` through a temporary file until the disk
    (or the file size limit) refuses, reporting a metric per MiB; the temporary file is removed
    on failure, as the engine's stages do."""
    out = ctx.job_dir / "outputs"
    out.mkdir(exist_ok=True)
    (out / "first.bin").write_bytes(b"1" * 4096)
    ctx.reporter.artefact("first", out / "first.bin")
    tmp = out / ".second.bin.tmp"
    chunk = b"2" * 2**20
    try:
        with tmp.open("wb") as handle:
            for mib in range(params["mib"]):
                handle.write(chunk)
                handle.flush()
                ctx.reporter.metric("written_mib", mib + 1, mib)
                if params["events"]:  # fill the disk through events.jsonl as well
                    ctx.reporter.log("x" * 65536)
        tmp.replace(out / "second.bin")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def epochs(params: dict[str, Any], ctx: StageContext) -> None:
    """A training stand-in: an epoch counter checkpointed after every epoch; resume continues after it."""
    checkpoint = ctx.workspace.root / "test-epochs" / f"{params['name']}.json"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    first = json.loads(checkpoint.read_text())["epoch"] + 1 if ctx.resume and checkpoint.exists() else 0
    ctx.reporter.log(f"starting at epoch {first}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}")
    for epoch in range(first, params["epochs"]):
        time.sleep(params["seconds"])
        ctx.reporter.metric("epoch", epoch, epoch)
        tmp = checkpoint.with_suffix(".tmp")
        tmp.write_text(json.dumps({"epoch": epoch}))
        os.replace(tmp, checkpoint)
        ctx.reporter.progress(epoch + 1, params["epochs"], f"epoch {epoch}")


def predictor(params: dict[str, Any], ctx: StageContext) -> None:
    """Write a predictions CSV (the submission's 15 columns) and its per-case table, as ``predict`` does,
    and register them as ``predictions`` and ``cases``."""
    path, cases = ctx.job_dir / "predictions.csv", ctx.job_dir / "cases.csv"
    with path.open("w", newline="") as handle, cases.open("w", newline="") as case_handle:
        writer, case_writer = csv.writer(handle), csv.writer(case_handle)
        writer.writerow(["SeriesInstanceUID", *LABEL_COLUMNS])
        case_writer.writerow(["SeriesInstanceUID", "status", "seconds", "reason"])
        for i in range(params["cases"]):
            writer.writerow([f"1.2.3.{i}", *[round((i + k) % 10 / 10, 2) for k in range(len(LABEL_COLUMNS))]])
            case_writer.writerow([f"1.2.3.{i}", "ok", 0.5 * i, ""])
    ctx.reporter.artefact("predictions", path)
    ctx.reporter.artefact("cases", cases)


def maker(params: dict[str, Any], ctx: StageContext) -> None:
    """Write the word into a file of the job folder (artefact ``made``), after a nap."""
    time.sleep(params["seconds"])
    if params["fail"]:
        raise RuntimeError("asked to fail")
    path = ctx.job_dir / "made.txt"
    path.write_text(params["word"])
    ctx.reporter.artefact("made", path)


def user(params: dict[str, Any], ctx: StageContext) -> None:
    """Read ``source`` (a path: the planner filled it), write it twice to ``<workspace>/used/<word>``."""
    text = open(params["source"]).read()
    out = ctx.workspace.root / "used" / params["word"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text * params["times"])
    ctx.reporter.log(f"read {params['source']}")
    ctx.reporter.artefact("used", out)


def top(params: dict[str, Any], ctx: StageContext) -> None:
    """Read test-use's output by convention (no parameter names it)."""
    text = (ctx.workspace.root / "used" / params["word"]).read_text()
    (ctx.job_dir / "top.txt").write_text(text.upper())
    ctx.reporter.artefact("top", ctx.job_dir / "top.txt")


def _square(x: int) -> int:
    return x * x


def pooler(params: dict[str, Any], ctx: StageContext) -> None:
    """Open and close a fork ``multiprocessing.Pool`` several times, as nnU-Net's preprocessing does."""
    import multiprocessing

    for _ in range(params["rounds"]):
        with multiprocessing.get_context("fork").Pool(params["processes"]) as pool:
            assert pool.map(_square, range(3)) == [0, 1, 4]
    ctx.reporter.log(f"{params['rounds']} pools closed")


_SECONDS = Param("seconds", "float", "How long to sleep")
_WORD = Param("word", "str", "A word")
STAGES: dict[str, Stage] = {
    "test-sleep": TestStage(
        "test-sleep", "Sleep in steps", f"{__name__}:sleeper",
        (_SECONDS, Param("steps", "int", "Steps"), Param("fail", "bool", "Fail at the end")),
        values={"seconds": 0.2, "steps": 2, "fail": False},
    ),
    "test-gpu-sleep": TestStage(
        "test-gpu-sleep", "Sleep while holding a GPU slot", f"{__name__}:sleeper",
        (_SECONDS, Param("steps", "int", "Steps"), Param("fail", "bool", "Fail at the end")),
        gpu=True, resumable=True, values={"seconds": 1.0, "steps": 2, "fail": False},
    ),
    "test-train": TestStage(
        "test-train", "Report training metrics per epoch", f"{__name__}:trainer",
        (Param("epochs", "int", "Epochs"), _SECONDS), resumable=True, values={"epochs": 5, "seconds": 0.05},
    ),
    "test-spawn": TestStage(
        "test-spawn", "Spawn children and wait", f"{__name__}:spawner",
        (_SECONDS, Param("end", "str", "How the stage ends", ("return", "raise", "exit"))),
        values={"seconds": 60.0, "end": "return"},
    ),
    "test-fill": TestStage(
        "test-fill", "Write until the disk is full", f"{__name__}:filler",
        (Param("mib", "int", "MiB to write"), Param("events", "bool", "Also fill through events")),
        values={"mib": 64, "events": False},
    ),
    "test-epochs": TestStage(
        "test-epochs", "Count checkpointed epochs (resumable, holds a GPU)", f"{__name__}:epochs",
        (Param("epochs", "int", "Epochs"), _SECONDS, Param("name", "str", "Checkpoint name")),
        gpu=True, resumable=True, values={"epochs": 5, "seconds": 0.2, "name": "run"},
    ),
    "test-predict": TestStage(
        "test-predict", "Write a predictions CSV", f"{__name__}:predictor",
        (Param("cases", "int", "Rows"),), values={"cases": 5},
    ),
    "test-pool": TestStage(
        "test-pool", "Open and close fork pools", f"{__name__}:pooler",
        (Param("rounds", "int", "Pools"), Param("processes", "int", "Workers per pool")),
        values={"rounds": 10, "processes": 4},
    ),
    "test-make": TestStage(
        "test-make", "Write a word to a file", f"{__name__}:maker", (_WORD, _SECONDS, Param("fail", "bool", "Fail")),
        values={"word": "hello", "seconds": 0.0, "fail": False},
    ),
    "test-use": TestStage(
        "test-use", "Repeat test-make's file", f"{__name__}:user",
        (_WORD, Param("source", "str", "test-make's file, or test-make"), Param("times", "int", "Repeats")),
        values={"word": "hello", "source": "test-make", "times": 2},
        inputs=(Input("test-make", "source", "made", match=("word",)),),
    ),
    "test-top": TestStage(
        "test-top", "Upper-case test-use's output", f"{__name__}:top", (_WORD,), values={"word": "hello"},
        inputs=(Input("test-use", match=("word",)),),
    ),
}
