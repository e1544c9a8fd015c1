"""Window / level presets: CTA in Hounsfield units, MR by percentiles of the case's own intensities.

CT numbers mean the same in every scanner, so CTA presets are fixed HU windows; MR intensities are
arbitrary per series, so MR presets are percentile ranges of the volume's foreground (voxels above
its minimum, from a subsample). A volume of unknown modality is taken as CT when it holds air
(values below -500 HU), else as MR. Manual adjustment moves the level by a tenth of the width and
scales the width by 1.25.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

#: CTA presets: name -> (level, width) in HU.
CT_PRESETS: dict[str, tuple[float, float]] = {"angio": (200.0, 700.0), "brain": (40.0, 80.0), "bone": (600.0, 2800.0)}
#: MR presets: name -> (low, high) percentiles of the foreground.
MR_PRESETS: dict[str, tuple[float, float]] = {"p1-p99": (1.0, 99.0), "p0.5-p99.5": (0.5, 99.5), "p5-p95": (5.0, 95.0)}


@dataclass(frozen=True)
class Window:
    """A display window: values from ``level - width / 2`` (black) to ``level + width / 2`` (white)."""

    level: float
    width: float
    name: str = "manual"

    def apply(self, values: np.ndarray) -> np.ndarray:
        """float32 grey levels 0..255."""
        low = self.level - self.width / 2
        return np.clip((values - low) * (255.0 / max(self.width, 1e-6)), 0, 255).astype(np.float32)

    def shifted(self, steps: int) -> "Window":
        return replace(self, level=self.level + steps * self.width / 10, name="manual")

    def scaled(self, steps: int) -> "Window":
        return replace(self, width=max(self.width * 1.25 ** steps, 1e-3), name="manual")

    def describe(self) -> str:
        return f"{self.name} L {self.level:.0f} W {self.width:.0f}"


def is_ct(modality: str, stats: dict[str, float]) -> bool:
    if modality:
        return modality.upper().startswith("CT")
    return stats.get("min", 0.0) < -500


def presets(modality: str, stats: dict[str, float]) -> list[Window]:
    """The presets of a case, the default first."""
    if is_ct(modality, stats):
        return [Window(level, width, name) for name, (level, width) in CT_PRESETS.items()]
    windows = []
    for name, (low, high) in MR_PRESETS.items():
        lo, hi = stats.get(f"p{low:g}", 0.0), stats.get(f"p{high:g}", 1.0)
        windows.append(Window((lo + hi) / 2, max(hi - lo, 1e-3), name))
    return windows
