"""Resource history of a job's process tree: GPU memory and utilisation, CPU and RSS (plotext).

Samples come from the job's runner (``resource`` events, see ``rsna_tui.jobs.monitor``). GPU
memory is drawn against the device total (the axis runs up to it) when the app can read it
(NVML); without GPU fields in the samples the panel says so and shows CPU and RAM only.
"""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

GIB = 2**30


class ResourcePanel(Vertical):
    def __init__(self, device_total: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.samples: list[dict[str, Any]] = []
        self.device_total = device_total

    def compose(self) -> ComposeResult:
        yield Static("", id="resources-status")
        yield PlotextPlot(id="gpu-plot", classes="resource-plot")
        yield PlotextPlot(id="cpu-plot", classes="resource-plot")

    def on_mount(self) -> None:
        self.redraw()

    def add_samples(self, samples: list[dict[str, Any]]) -> None:
        if samples:
            self.samples.extend(samples)
            self.redraw()

    def redraw(self) -> None:
        samples = self.samples
        if len(samples) > 400:  # more than the plots' dots across; thin evenly, keep the last
            step = len(samples) / 400
            samples = [samples[int(i * step)] for i in range(400)] + [samples[-1]]
        start = samples[0]["t"] if samples else 0.0
        xs = [(s["t"] - start) / 60 for s in samples]
        has_gpu = any(s.get("gpu_mem_bytes") is not None for s in samples)
        gpu_plot = self.query_one("#gpu-plot", PlotextPlot)
        gpu_plot.display = has_gpu
        status = self.query_one("#resources-status", Static)
        if not samples:
            status.update("no resource samples yet (the runner samples every few seconds)")
        elif has_gpu:
            last = samples[-1]
            total = f" of {self.device_total / GIB:.1f} GiB" if self.device_total else ""
            status.update(
                f"GPU: job {(last.get('proc_gpu_mem_bytes') or 0) / GIB:.2f} GiB, device {last['gpu_mem_bytes'] / GIB:.2f}"
                f" GiB{total}, util {last.get('gpu_util') or 0:.0f}% | CPU {last['cpu_percent']:.0f}% RSS {last['rss_bytes'] / GIB:.2f} GiB"
            )
            plt = gpu_plot.plt
            plt.clear_data()
            plt.clear_figure()
            plt.plot(xs, [(s.get("proc_gpu_mem_bytes") or 0) / GIB for s in samples], label="job GiB", marker="braille")
            plt.plot(xs, [(s.get("gpu_mem_bytes") or 0) / GIB for s in samples], label="device GiB", marker="braille")
            plt.plot(xs, [s.get("gpu_util") or 0 for s in samples], label="util %", yside="right", marker="braille")
            if self.device_total:  # the memory axis runs to the device's total: how close to full
                plt.ylim(0, self.device_total / GIB, yside="left")
                plt.title(f"GPU memory (GiB, axis up to the device's {self.device_total / GIB:.0f}) and utilisation (%)")
            else:
                plt.title("GPU memory (GiB) and utilisation (%)")
            gpu_plot.refresh()
        else:
            last = samples[-1]
            status.update(f"no GPU in the samples (no NVML or no GPU): CPU {last['cpu_percent']:.0f}%, "
                          f"RSS {last['rss_bytes'] / GIB:.2f} GiB")
        cpu_plot = self.query_one("#cpu-plot", PlotextPlot)
        plt = cpu_plot.plt
        plt.clear_data()
        plt.clear_figure()
        if samples:
            plt.plot(xs, [s["cpu_percent"] for s in samples], label="CPU %", marker="braille")
            plt.plot(xs, [s["rss_bytes"] / GIB for s in samples], label="RSS GiB", yside="right", marker="braille")
        plt.xlabel("minutes")
        plt.title("CPU (%, 100 = one core) and RSS (GiB) of the process tree")
        cpu_plot.refresh()
