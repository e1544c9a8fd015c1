"""The app in a real terminal: tmux (Debian's), keys with send-keys, the screen with capture-pane.

A job launched from the app runs and is cancelled from the app; closing the terminal ends the app
and leaves a running job alone. Skipped, with the reason, when tmux is missing and cannot be installed.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import psutil
import pytest

from rsna_tui.jobs.local import group_alive
from tests.app.conftest import REPO, wait_for


def _tmux() -> str:
    found = shutil.which("tmux")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "tmux"], capture_output=True, timeout=300)
        found = shutil.which("tmux")
    if not found:
        pytest.skip("tmux is not installed and could not be installed (apt-get install tmux)")
    return found


class Terminal:
    """One tmux server of its own (``-L``), one session running ``command``."""

    def __init__(self, command: list[str], env: dict[str, str], size: tuple[int, int] = (100, 30)) -> None:
        self.tmux = _tmux()
        self.socket = f"rsna-tui-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k.startswith(("RSNA_TUI", "PYTHON", "PATH")))
        script = f"cd {shlex.quote(str(REPO))} && env {exports} TERM=xterm-256color {shlex.join(command)}"
        self.run("new-session", "-d", "-s", "app", "-x", str(size[0]), "-y", str(size[1]), script)

    def run(self, *args: str) -> str:
        return subprocess.run([self.tmux, "-L", self.socket, *args], capture_output=True, text=True, check=True).stdout

    def keys(self, *keys: str) -> None:
        """Named keys (``Enter``, ``C-p``), one at a time: escape sequences must not run together."""
        for key in keys:
            self.run("send-keys", "-t", "app", key)
            time.sleep(0.3)

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "app", "-l", text)
        time.sleep(0.3)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "app")

    def wait(self, predicate: Callable[[str], bool], what: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen shows:\n{text}")
            time.sleep(0.2)

    def alive(self) -> bool:
        """Whether the session still runs (it ends with the app)."""
        return subprocess.run([self.tmux, "-L", self.socket, "has-session", "-t", "app"], capture_output=True).returncode == 0

    def pane_pid(self) -> int:
        return int(self.run("display-message", "-p", "-t", "app", "#{pane_pid}").strip())

    def close(self) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def terminal(job_env: dict[str, str], workspace: Path):
    opened: list[Terminal] = []

    def open_app() -> Terminal:
        term = Terminal([sys.executable, "-m", "rsna_tui", "--workspace", str(workspace)], job_env)
        opened.append(term)
        return term

    yield open_app
    for term in opened:
        term.close()


def test_launch_and_cancel_a_job_from_the_app(terminal, manager) -> None:
    term = terminal()
    term.wait(lambda s: "0 of 0 jobs" in s, "the Jobs screen")
    term.keys("C-p")
    term.wait(lambda s: "Search" in s or "Launch" in s, "the command palette")
    term.type("launch stage test-sleep")
    term.wait(lambda s: "Sleep in steps" in s, "the palette's hit")
    term.keys("Enter")
    term.wait(lambda s: "seconds (float)" in s, "the launch form of test-sleep")
    time.sleep(1.0)  # the cursor moves into the first field (seconds) once the form is mounted
    term.keys("End", "C-u")
    term.type("60")
    term.wait(lambda s: "--set seconds=60" in " ".join(s.split()), "the command-line preview")
    term.keys("C-s")
    term.wait(lambda s: "running" in s and "test-sleep" in s, "the job running in the table")
    job = wait_for(manager, 1, lambda j: j.status == "running")
    assert job.params["seconds"] == 60.0
    pgid = int(job.native_id)
    term.keys("c")
    term.wait(lambda s: f"process group {pgid}" in s, "the confirm listing the process group")
    assert group_alive(pgid)
    term.keys("y")
    term.wait(lambda s: "cancelled" in s, "the job cancelled in the table", timeout=30)
    wait_for(manager, 1, lambda j: j.status == "cancelled")
    assert not group_alive(pgid)
    term.keys("q")
    deadline = time.monotonic() + 15
    while term.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not term.alive(), "q did not end the app"


def test_closing_the_terminal_ends_the_app_and_not_the_job(terminal, manager) -> None:
    job = wait_for(manager, manager.submit("test-sleep", overrides=["seconds=60"]).id, lambda j: j.status == "running")
    term = terminal()
    term.wait(lambda s: "1 of 1 jobs" in s and "running" in s, "the job in the app")
    app_pid = term.pane_pid()
    app_procs = [psutil.Process(app_pid), *psutil.Process(app_pid).children(recursive=True)]
    term.run("kill-session", "-t", "app")  # the terminal goes away (as with a dropped SSH link): SIGHUP
    gone, alive = psutil.wait_procs(app_procs, timeout=15)
    assert not alive, f"the app is still running after its terminal closed: {alive}"
    assert group_alive(int(job.native_id)) and manager.job(job.id).status == "running"
