"""The rest of the app: palette, help, clipboard, GPUs, failing reads, start-up imports, serve."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from rsna_tui.app.app import RsnaApp
from rsna_tui.app.gpu_sample import GpuProcess, MachineSample, attribute, sample_machine
from rsna_tui.app.screens.detail import JobDetailScreen
from rsna_tui.app.screens.help import HelpScreen
from rsna_tui.workspace import Workspace
from tests.app.conftest import REPO, wait_for
from tests.app.tui.conftest import until

pytestmark = pytest.mark.anyio


async def first_hit(pilot, app, text: str) -> None:
    """Wait until the palette's first hit is ``text`` (hits arrive from the providers over time)."""
    from textual.command import CommandList

    def first() -> str:
        hits = app.screen.query(CommandList)
        return str(hits.first().get_option_at_index(0).prompt) if hits and hits.first().option_count else ""

    def typed() -> str:
        from textual.command import CommandInput

        boxes = app.screen.query(CommandInput)
        return boxes.first().value if boxes else "?"

    await until(pilot, lambda: first().startswith(text), what=f"the palette's first hit {text!r}, not {first()!r} (typed {typed()!r})")


async def test_palette_opens_a_job_and_filters_by_status(manager, make_app) -> None:
    ok = wait_for(manager, manager.submit("test-sleep", overrides=["seconds=0.1"]).id, lambda j: j.terminal)
    bad = wait_for(manager, manager.submit("test-sleep", overrides=["seconds=0.1", "fail=true"]).id, lambda j: j.terminal)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one("#job-table")
        await until(pilot, lambda: len(table.shown_ids) == 2)
        await pilot.press("ctrl+p", *"status failed")
        await first_hit(pilot, app, "Filter jobs by status failed")
        await pilot.press("enter")
        await until(pilot, lambda: table.shown_ids == [bad.id], what="only the failed job")
        await pilot.press("ctrl+p", *f"job {ok.id}")
        await first_hit(pilot, app, f"Open job {ok.id}")
        await pilot.press("enter")
        screen = await until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen)
        assert screen.job_id == ok.id


async def test_help_lists_the_keys_of_the_screen(manager, make_app) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("question_mark")
        help_screen = await until(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen)
        text = "\n".join(" ".join(map(str, row)) for row in zip(*(c._cells for c in help_screen.table.columns)))
        for label in ("Cancel", "Retry", "Resume", "Filter", "Launch", "GPUs", "command palette"):
            assert label in text
        assert "Cursor up" not in text  # Textual's own widget keys are left out
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen))


async def test_artefact_path_goes_to_the_clipboard(manager, make_app) -> None:
    job = wait_for(manager, manager.submit("test-sleep", overrides=["seconds=0.1"]).id, lambda j: j.terminal)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await app.run_action(f"open_job({job.id})")
        await until(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.loads)
        await pilot.press("Y")
        assert app.clipboard == manager.store.artefacts(job.id)["marker"]


async def test_gpu_screen_shows_devices_and_who_holds_them(make_app) -> None:
    from tests.app.tui.snapshot_db import fake_machine

    app = make_app(gpu_sampler=fake_machine)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("5")
        procs = await until(pilot, lambda: app.screen.query("#gpu-procs") and app.screen.query_one("#gpu-procs").row_count and
                            app.screen.query_one("#gpu-procs"))
        owners = [str(procs.get_row_at(i)[3]) for i in range(procs.row_count)]
        assert owners == ["job 4", "other"]


def test_gpu_processes_are_matched_to_jobs_by_process_group() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(child.pid).cmdline()[1:] and time.monotonic() < deadline:
            time.sleep(0.05)  # until the child's exec shows its command line
        sample = MachineSample(processes=[GpuProcess(0, child.pid, 2**30), GpuProcess(0, os.getpid(), 2**20)])
        attribute(sample, {child.pid: 7})
        assert [p.job_id for p in sample.processes] == [7, None]
        assert "time.sleep(30)" in sample.processes[0].command
    finally:
        child.kill()
        child.wait()


def test_without_nvml_the_sample_says_so_and_has_cpu_and_ram() -> None:
    sample = sample_machine()
    if sample.devices:
        pytest.skip("this machine has a GPU")
    assert sample.note.endswith("CPU and RAM only") and sample.ram_total > 0 and sample.cpus >= 1


async def test_a_failing_read_is_reported_and_the_app_keeps_working(tmp_path: Path) -> None:
    app = RsnaApp(Workspace(tmp_path), tmp_path / "missing.db", readonly=True, poll_interval=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: any("refresh failed" in n.message for n in app._notifications), what="a toast")
        await pilot.press("5")
        await until(pilot, lambda: app.current_mode == "gpus", what="the keys still work")
        assert app.is_running


def test_the_app_imports_neither_torch_nor_nnunet() -> None:
    code = (
        "import sys, rsna_tui.cli, rsna_tui.app.app\n"
        "from rsna_tui.app.screens import jobs, detail, launch, datasets, pipeline, gpus, help\n"
        "heavy = [m for m in ('torch', 'nnunetv2', 'dynamic_network_architectures', 'SimpleITK') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_bare_rsna_tui_without_a_terminal_prints_the_help(cli) -> None:
    result = cli()
    assert "Usage" in result.stdout and "serve" in result.stdout


def test_serve_runs_the_app_for_a_browser_on_localhost(job_env) -> None:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "rsna_tui", "serve", "--port", str(port)], cwd=REPO, env=job_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        banner = proc.stdout.readline() + proc.stdout.readline()
        assert f"http://localhost:{port}" in banner and "ssh -L" in banner
        deadline = time.monotonic() + 30
        while True:
            try:
                page = urllib.request.urlopen(f"http://localhost:{port}/", timeout=5).read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert "rsna-tui" in page and "ws://localhost" in page.replace("wss://", "ws://") or "websocket" in page.lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
