"""Helpers of the app tests: open the app on a workspace and wait for what it shows.

The app runs headless (``App.run_test``) in this process; its jobs are real processes started by
the real job manager, with the test-only stages of ``tests/app/stages_for_tests.py``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest

from rsna_tui.app.app import RsnaApp
from rsna_tui.workspace import Workspace


async def until(pilot: Any, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Let the app run until ``predicate()`` is truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        await pilot.pause(0.05)


def cell_text(table: Any, job_id: int, column: str) -> str:
    cell = table.get_cell(str(job_id), column)
    return getattr(cell, "plain", str(cell))


@pytest.fixture
def make_app(workspace: Path, job_env: dict[str, str]) -> Callable[..., RsnaApp]:
    """An app on the test workspace, polling fast, cancelling with a short grace period."""

    def make(**kwargs: Any) -> RsnaApp:
        kwargs.setdefault("poll_interval", 0.1)
        kwargs.setdefault("grace", 1.0)
        return RsnaApp(Workspace(workspace), **kwargs)

    return make


@pytest.fixture
def anyio_backend() -> str:
    """The app tests are coroutines run by anyio's pytest plugin, on asyncio (Textual's loop)."""
    return "asyncio"
