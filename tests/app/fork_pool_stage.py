"""A stage function that does what nnU-Net's file listing does: ``multiprocessing.Pool()`` (fork on
Linux) in a ``with`` block, whose exit terminates the workers with SIGTERM. Used by
``test_job_edges`` through ``submit(function=...)``."""
from __future__ import annotations

import multiprocessing
from typing import Any

from engine.context import StageContext


def run(params: dict[str, Any], ctx: StageContext) -> None:
    for _ in range(4):
        with multiprocessing.get_context("fork").Pool(2) as pool:
            assert pool.map(abs, range(-8, 0)) == list(range(8, 0, -1))
    ctx.reporter.log("four forked pools done")
