"""What the slice viewer is looking at, apart from any UI: the cursor voxel, the enlarged plane, the
window, the overlays shown. The screen and the CLI drive the same object, so ``rsna-tui review
--png`` draws what the screen would show after the same keys.

The cursor is one voxel (i, j, k); each plane shows the slice through it (axial k, coronal j,
sagittal i), so jumping to a point moves all three planes at once. It starts on the first truth
localizer point, else on the strongest decoder-1 aneurysm response, else in the middle.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rsna_tui.review.render import CONVENTIONS, OVERLAYS, Picture, fit, render
from rsna_tui.review.volume import NORMAL_AXIS, PLANES, CaseData
from rsna_tui.review.windows import Window, presets


@dataclass
class Viewer:
    """The state of one case's slice viewer."""

    case: CaseData
    modality: str = ""
    plane: str = "axial"
    convention: str = "radiological"
    overlays: set[str] = field(default_factory=lambda: set(OVERLAYS))
    cursor: list[int] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    window: Window | None = None
    point_index: int = -1

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"unknown convention {self.convention!r}; conventions: {', '.join(CONVENTIONS)}")
        self.windows = presets(self.modality, self.case.stats())
        self.window = self.window or self.windows[0]
        if not self.cursor:
            self.cursor = [s // 2 for s in self.case.shape]
            if self.case.points:
                self.next_point()
            else:
                self.strongest()

    # -- slices ---------------------------------------------------------------------------------

    def index(self, plane: str | None = None) -> int:
        return self.cursor[NORMAL_AXIS[plane or self.plane]]

    def set_slice(self, index: int, plane: str | None = None) -> None:
        axis = NORMAL_AXIS[plane or self.plane]
        self.cursor[axis] = max(0, min(self.case.shape[axis] - 1, int(index)))

    def scroll(self, steps: int, plane: str | None = None) -> None:
        self.set_slice(self.index(plane) + steps, plane)

    def jump(self, voxel: tuple[float, ...]) -> None:
        for axis, value in enumerate(voxel):
            self.cursor[axis] = max(0, min(self.case.shape[axis] - 1, int(round(value))))

    def next_point(self) -> str:
        """Move to the next truth localizer point; says which (or that there is none)."""
        if not self.case.points:
            return "no truth localizer point in this case"
        self.point_index = (self.point_index + 1) % len(self.case.points)
        point = self.case.points[self.point_index]
        self.jump(point.ijk)
        return f"truth point {self.point_index + 1}/{len(self.case.points)}: {point.location}"

    def strongest(self) -> str:
        """Move to the strongest decoder-1 aneurysm response."""
        voxel = self.case.strongest_response()
        if voxel is None:
            return "no decoder-1 aneurysm voxel in this case" if "seg1" in self.case.maps else \
                "no decoder maps in this case (predict ran without save_segmentations)"
        self.jump(voxel)
        return f"strongest aneurysm response at voxel {voxel}"

    def cycle_plane(self) -> None:
        self.plane = PLANES[(PLANES.index(self.plane) + 1) % len(PLANES)]

    # -- display --------------------------------------------------------------------------------

    def toggle(self, overlay: str) -> bool:
        """Show or hide one overlay; returns whether it is shown now."""
        if overlay not in OVERLAYS:
            raise ValueError(f"unknown overlay {overlay!r}; overlays: {', '.join(OVERLAYS)}")
        self.overlays ^= {overlay}
        return overlay in self.overlays

    def next_window(self) -> Window:
        names = [w.name for w in self.windows]
        position = names.index(self.window.name) + 1 if self.window and self.window.name in names else 0
        self.window = self.windows[position % len(self.windows)]
        return self.window

    def choose_window(self, name: str) -> Window:
        for window in self.windows:
            if window.name == name:
                self.window = window
                return window
        raise ValueError(f"unknown window {name!r} for this case; presets: {', '.join(w.name for w in self.windows)}")

    def adjust(self, level_steps: int = 0, width_steps: int = 0) -> Window:
        assert self.window is not None
        self.window = self.window.shifted(level_steps).scaled(width_steps)
        return self.window

    def picture(self, plane: str, width: int, height: int) -> Picture:
        """The plane through the cursor, fitted into ``width`` x ``height`` pixels (aspect kept)."""
        assert self.window is not None
        w, h = fit(self.case, plane, width, height)
        return render(self.case, plane, self.index(plane), self.window, w, h, frozenset(self.overlays),
                      self.convention)
