"""GPUs: every visible device (memory, utilisation, temperature) and which job holds which process."""
from __future__ import annotations

import threading

from textual import work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from rsna_tui.app.gpu_sample import MachineSample, attribute, sample_machine
from rsna_tui.app.messages import GpusSampled, Notice

SAMPLE_INTERVAL_S = 2.0
GIB = 2**30


class GpusScreen(Screen):
    AUTO_FOCUS = "#gpu-procs"
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("sampling ...", id="gpu-note", classes="screen-status")
        yield DataTable(id="gpu-devices", cursor_type="row")
        yield DataTable(id="gpu-procs", cursor_type="row")
        yield Static("", id="machine", classes="screen-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#gpu-devices", DataTable).add_columns("GPU", "name", "memory used / total", "util", "temp")
        self.query_one("#gpu-procs", DataTable).add_columns("GPU", "pid", "memory", "job", "command")
        self._stop = threading.Event()
        self.sample()

    def on_unmount(self) -> None:
        self._stop.set()

    @work(thread=True, exclusive=True, exit_on_error=False, group="gpus")
    def sample(self) -> None:
        given = self.app.gpu_sampler  # tests: a fixed sample, already attributed
        while self.app.keeps_running():
            try:
                if given is not None:
                    sample = given()
                else:
                    groups = {int(l.native_id): l.id for l in list(self.app.jobs.values())
                              if not l.terminal and l.backend == "local" and l.native_id and l.native_id.isdigit()}
                    sample = attribute(sample_machine(), groups)
                self.post_message(GpusSampled(sample))
            except Exception as exc:
                self.app.post_message(Notice(f"GPU sample failed: {exc}", "error"))
            if self._stop.wait(SAMPLE_INTERVAL_S):
                return

    def on_gpus_sampled(self, message: GpusSampled) -> None:
        sample: MachineSample = message.sample
        note = sample.note or f"{len(sample.devices)} GPU(s) visible through NVML"
        self.query_one("#gpu-note", Static).update(note)
        devices = self.query_one("#gpu-devices", DataTable)
        devices.display = bool(sample.devices)
        devices.clear()
        for d in sample.devices:
            share = d.mem_used / d.mem_total if d.mem_total else 0.0
            devices.add_row(
                str(d.index), d.name, f"{d.mem_used / GIB:.1f} / {d.mem_total / GIB:.1f} GiB ({share:.0%})",
                "" if d.util is None else f"{d.util:.0f}%", "" if d.temperature is None else f"{d.temperature:.0f} C",
            )
        procs = self.query_one("#gpu-procs", DataTable)
        procs.display = bool(sample.devices)
        procs.clear()
        for p in sample.processes:
            owner = f"job {p.job_id}" if p.job_id is not None else "other"
            procs.add_row(str(p.device), str(p.pid), "" if p.mem is None else f"{p.mem / GIB:.2f} GiB", owner, p.command)
        self.query_one("#machine", Static).update(
            f"CPU {sample.cpu_percent:.0f}% of {sample.cpus} cores | RAM {sample.ram_used / GIB:.1f} / "
            f"{sample.ram_total / GIB:.1f} GiB"
        )
