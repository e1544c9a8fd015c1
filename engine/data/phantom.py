"""A parametric Circle-of-Willis phantom with saccular aneurysms, inside a head-like ellipsoid.

The anatomy is drawn in a *head frame* whose axes are the patient's L (+x), P (+y) and S (+z), in mm,
with its origin at the centre of the circle; a per-case pose (small rotation and shift) places the
head in patient LPS space. Left-sided vessels therefore sit at +x, as in DICOM: the side is a fact
of the phantom, never of how a series happens to be acquired.

The 13 labelled segments follow the competition's vessel classes (``engine.labels.VESSELS``):
infra- and supraclinoid ICA, MCA (M1 + M2 branches), ACA (A1 + A2), AComm, PComm, basilar tip and
"other posterior circulation" (basilar trunk, vertebral arteries, P1/P2 of the PCAs). Per case, the
nodes are jittered, the whole circle is scaled, radii vary, segments wiggle (tortuosity), and a PComm
or an A1 is sometimes absent (common anatomical variants). Node positions are rounded textbook values.

Aneurysms are spheres (with a neck and, sometimes, a daughter bleb) attached to a segment of their
location's vessel, on the correct side and clear of the midline for left/right locations.
:func:`render` evaluates the phantom on a :class:`SliceGrid` as soft occupancies (partial volume) and
a vessel label map; sac voxels carry their parent vessel's label, as a vessel segmentation that
includes the sac would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data.slice_grid import SliceGrid
from engine.labels import LOCATION_TO_VESSEL, LOCATIONS, VESSELS

#: Head-frame nodes of the left side (x > 0); the right side mirrors x. Rounded textbook positions.
_LEFT_NODES: dict[str, tuple[float, float, float]] = {
    "ica0": (13, 12, -42), "ica1": (16, 8, -31), "ica2": (18, 0, -21), "ica3": (16, -6, -13),
    "clinoid": (14, -5, -6), "pcomm0": (15, -2, -1), "terminus": (16, 0, 3),
    "m1": (27, -2, 5), "mbif": (37, 0, 8), "m2a": (47, 4, 14), "m2b": (45, -5, 21),
    "a1": (8, -10, 6), "acomm": (2.5, -14, 8), "a2": (3.5, -21, 19), "a2end": (4, -16, 33),
    "pcomm1": (12, 7, -2), "p1": (4.5, 17, -4), "p1p2": (9, 16, -3), "p2": (18, 27, 0), "p2end": (26, 45, 6),
    "va1": (6, 25, -47), "va0": (10, 27, -58),
}
_MID_NODES: dict[str, tuple[float, float, float]] = {
    "vbj": (0, 22, -38), "bas1": (0, 20, -24), "bas2": (0, 18, -10), "tip": (0, 17, -4),
}
#: (segment name, vessel label name without side, nodes, radius at start, radius at end), per side.
_SIDED_SEGMENTS = (
    ("Infraclinoid ICA", "Infraclinoid ICA", ("ica0", "ica1", "ica2", "ica3", "clinoid"), 2.4, 2.2),
    ("Supraclinoid ICA", "Supraclinoid ICA", ("clinoid", "pcomm0", "terminus"), 2.2, 2.0),
    ("M1", "MCA", ("terminus", "m1", "mbif", "m2a"), 1.6, 1.1),
    ("M2", "MCA", ("mbif", "m2b"), 1.2, 1.0),
    ("A1", "ACA", ("terminus", "a1", "acomm"), 1.3, 1.2),
    ("A2", "ACA", ("acomm", "a2", "a2end"), 1.2, 1.0),
    ("PComm", "PComm", ("pcomm0", "pcomm1", "p1p2"), 0.9, 0.9),
    ("PCA", "Other Posterior Circulation", ("p1", "p1p2", "p2", "p2end"), 1.3, 1.0),
    ("Vertebral", "Other Posterior Circulation", ("vbj", "va1", "va0"), 1.7, 1.7),
)
_MID_SEGMENTS = (
    ("Basilar trunk", "Other Posterior Circulation", ("vbj", "bas1", "bas2"), 1.8, 1.8),
    ("Basilar tip", "Basilar Tip", ("bas2", "tip"), 1.9, 1.9),
    ("P1 root", "Other Posterior Circulation", ("tip", "Lp1"), 1.3, 1.3),
    ("P1 root", "Other Posterior Circulation", ("tip", "Rp1"), 1.3, 1.3),
    ("AComm", "AComm", ("Lacomm", "Racomm"), 0.9, 0.9),
)
#: Head ellipsoid in the head frame (the brain reaches down to the skull base and brain stem).
_HEAD_CENTRE = (0.0, 10.0, 5.0)
_HEAD_SEMI_AXES = (74.0, 94.0, 92.0)
#: Default aneurysm radius range (mm): demo-sized, so that sacs span a few voxels of a small volume.
ANEURYSM_RADIUS = (3.0, 5.5)


@dataclass(frozen=True)
class Tube:
    """One vessel segment: a centreline with a radius per point, in the head frame (mm)."""

    name: str
    label: int
    points: np.ndarray
    radii: np.ndarray


@dataclass(frozen=True)
class Aneurysm:
    """A saccular aneurysm at one competition location (0-based index into ``LOCATIONS``)."""

    location: int
    centre: np.ndarray
    radius: float
    #: The point of the parent centreline the sac grows from.
    neck: np.ndarray
    #: Centre and radius of a daughter bleb, or None.
    bleb: tuple[np.ndarray, float] | None


@dataclass(frozen=True)
class Phantom:
    """One case: vessels, aneurysms, head, and the pose that puts the head frame into LPS space."""

    tubes: tuple[Tube, ...]
    aneurysms: tuple[Aneurysm, ...]
    head_semi_axes: np.ndarray
    #: Columns are the head frame's x (left), y (posterior), z (superior) axes expressed in LPS.
    rotation: np.ndarray
    #: LPS position of the head-frame origin (the centre of the circle of Willis).
    translation: np.ndarray
    #: Names of segments absent in this case (anatomical variants).
    missing: tuple[str, ...]

    def to_lps(self, q: np.ndarray) -> np.ndarray:
        """Head-frame points (..., 3) -> LPS mm."""
        return np.asarray(q, float) @ self.rotation.T + self.translation

    @property
    def left_axis_lps(self) -> np.ndarray:
        """Unit vector of the patient's left in LPS (the head's x axis after the pose)."""
        return self.rotation[:, 0].copy()

    def side_mm(self, lps_point: np.ndarray) -> float:
        """Signed distance of an LPS point from the mid-sagittal plane; positive = patient's left."""
        return float((np.asarray(lps_point) - self.translation) @ self.left_axis_lps)


def location_side(location: int) -> int:
    """+1 for a left location, -1 for a right one, 0 for a midline one."""
    name = LOCATIONS[location]
    return 1 if name.startswith("Left") else -1 if name.startswith("Right") else 0


def build_phantom(rng: np.random.Generator, locations: tuple[int, ...],
                  radius_mm: tuple[float, float] = ANEURYSM_RADIUS) -> Phantom:
    """A random case with an aneurysm at each of ``locations`` (0-based competition location indices),
    sac radii drawn uniformly from ``radius_mm``."""
    scale = rng.uniform(0.9, 1.1)
    radius_scale = rng.uniform(0.85, 1.15)
    nodes: dict[str, np.ndarray] = {}
    for side, sign in (("L", 1.0), ("R", -1.0)):
        for name, (x, y, z) in _LEFT_NODES.items():
            node = scale * np.array([sign * x, y, z]) + rng.normal(0.0, 1.2, 3)
            node[0] = sign * max(sign * node[0], 2.0)  # jitter never moves a sided node across the midline
            nodes[side + name] = node
    for name, xyz in _MID_NODES.items():
        nodes[name] = scale * np.array(xyz) + rng.normal(0.0, 1.0, 3) * (0.4, 1.0, 1.0)
    # Shared junctions: the vertebro-basilar junction and the basilar tip sit on the midline.
    for side in "LR":
        nodes[side + "vbj"] = nodes["vbj"]

    names = {LOCATIONS[i] for i in locations}
    missing = []
    for word in ("Left", "Right"):
        if f"{word} Posterior Communicating Artery" not in names and rng.random() < 0.2:
            missing.append(f"{word} PComm")
    if not names & {"Left Anterior Cerebral Artery", "Right Anterior Cerebral Artery", "Anterior Communicating Artery"}:
        if rng.random() < 0.1:
            missing.append(f"{rng.choice(['Left', 'Right'])} A1")

    tubes = []
    for side, word in (("L", "Left"), ("R", "Right")):
        for seg, vessel, keys, r0, r1 in _SIDED_SEGMENTS:
            name = f"{word} {seg}"
            if name in missing:
                continue
            label = VESSELS.index(vessel if vessel == "Other Posterior Circulation" else f"{word} {vessel}") + 1
            pts = [nodes["vbj"] if k == "vbj" else nodes[side + k] for k in keys]
            tubes.append(_tube(rng, name, label, pts, r0 * radius_scale, r1 * radius_scale))
    for seg, vessel, keys, r0, r1 in _MID_SEGMENTS:
        tubes.append(_tube(rng, seg, VESSELS.index(vessel) + 1, [nodes[k] for k in keys],
                           r0 * radius_scale, r1 * radius_scale, wiggle=seg != "AComm"))

    aneurysms: list[Aneurysm] = []
    for loc in locations:
        aneurysms.append(_place_aneurysm(rng, loc, tubes, aneurysms, radius_mm))

    angles = np.deg2rad(rng.uniform([-6, -10, -5], [6, 10, 5]))
    rotation = _rotation(*angles)
    translation = rng.normal(0.0, 4.0, 3)
    head = np.array(_HEAD_SEMI_AXES) * rng.uniform(0.92, 1.08)
    return Phantom(tuple(tubes), tuple(aneurysms), head, rotation, translation, tuple(missing))


def _tube(rng: np.random.Generator, name: str, label: int, nodes: list[np.ndarray], r0: float, r1: float,
          wiggle: bool = True, step: float = 1.5) -> Tube:
    """Densify a node polyline and add a smooth tortuosity that keeps both ends fixed."""
    pts = [nodes[0]]
    for a, b in zip(nodes[:-1], nodes[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        pts.extend(a + (np.arange(1, n + 1) / n)[:, None] * (b - a))
    points = np.array(pts)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    length = max(arc[-1], 1e-6)
    if wiggle and length > 8:
        axis = (points[-1] - points[0]) / max(np.linalg.norm(points[-1] - points[0]), 1e-6)
        u = rng.normal(size=3)
        perp = u - (u @ axis) * axis
        perp /= max(np.linalg.norm(perp), 1e-6)
        amplitude = rng.uniform(0.0, 1.6)
        wavelength = rng.uniform(12.0, 25.0)
        phase = rng.uniform(0, 2 * np.pi)
        offset = amplitude * np.sin(2 * np.pi * arc / wavelength + phase) * np.sin(np.pi * arc / length)
        points = points + offset[:, None] * perp
    radii = r0 + (r1 - r0) * arc / length
    return Tube(name, label, points, radii)


def _place_aneurysm(rng: np.random.Generator, location: int, tubes: list[Tube], placed: list[Aneurysm],
                    radius_mm: tuple[float, float]) -> Aneurysm:
    """A sac on a segment of the location's vessel, clear of other sacs and on the correct side."""
    label = LOCATION_TO_VESSEL[location]
    name = LOCATIONS[location]
    side = location_side(location)
    candidates = [t for t in tubes if t.label == label]
    if not candidates:
        raise RuntimeError(f"phantom has no segment for location {name!r}")
    radius = float(rng.uniform(*radius_mm))
    best = None
    for attempt in range(180):
        if attempt and attempt % 60 == 0:
            radius *= 0.85  # a large sac that fits nowhere clear of the others: a smaller one (large radii only)
        tube = candidates[int(rng.integers(len(candidates)))]
        n = len(tube.points)
        if name == "Basilar Tip":
            idx, direction = n - 1, np.array([0.0, 0.0, 1.0]) + rng.normal(0.0, 0.3, 3)
        elif name == "Anterior Communicating Artery":
            idx, direction = n // 2, np.array([0.0, -1.0, 0.6]) + rng.normal(0.0, 0.3, 3)
        else:
            idx = int(rng.integers(max(1, n // 8), max(2, n - n // 8)))
            idx = min(max(idx, 1), n - 2)
            tangent = tube.points[idx + 1] - tube.points[idx - 1]
            tangent /= max(np.linalg.norm(tangent), 1e-6)
            u = rng.normal(size=3)
            if side:
                u[0] = side * (abs(u[0]) + 0.5)
            direction = u - (u @ tangent) * tangent
        direction /= max(np.linalg.norm(direction), 1e-6)
        neck = tube.points[idx]
        centre = neck + direction * (tube.radii[idx] + 0.7 * radius)
        ok_side = side == 0 or centre[0] * side >= 0.5 * radius + 2.0
        ok_near = np.linalg.norm(centre) < 45.0
        ok_free = all(np.linalg.norm(centre - a.centre) > radius + a.radius + 1.0 for a in placed)
        best = (neck, centre)
        if ok_side and ok_near and ok_free:
            break
    else:
        raise RuntimeError(f"could not place an aneurysm at {name!r} clear of the midline and other sacs")
    neck, centre = best
    bleb = None
    if rng.random() < 0.3:
        u = rng.normal(size=3)
        bleb = (centre + 0.8 * radius * u / np.linalg.norm(u), 0.4 * radius)
    return Aneurysm(location, centre, radius, neck, bleb)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation about S (yaw), then L (pitch), then P (roll)."""
    cz, sz = np.cos(yaw), np.sin(yaw)
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


@dataclass
class Fields:
    """A phantom evaluated on a grid; arrays are (slices, rows, cols)."""

    #: Depth below the head surface in mm (negative outside the head).
    depth: np.ndarray
    #: Soft occupancy (0..1) of vessel lumen and of aneurysm sacs.
    vessel: np.ndarray
    aneurysm: np.ndarray
    #: Vessel labels 0..13 (sacs carry their parent vessel's label).
    labels: np.ndarray
    #: Head-frame coordinates of every voxel (slices, rows, cols, 3), for textures.
    head_xyz: np.ndarray


def render(phantom: Phantom, grid: SliceGrid) -> Fields:
    """Evaluate the phantom on ``grid``: soft occupancies with a one-voxel partial-volume edge."""
    lps = grid.lps_coordinates()
    head_xyz = (lps - phantom.translation.astype(np.float32)) @ phantom.rotation.astype(np.float32)
    rel = (head_xyz - np.asarray(_HEAD_CENTRE, np.float32)) / phantom.head_semi_axes.astype(np.float32)
    rho = np.sqrt(np.sum(rel * rel, axis=-1))
    grad = np.sqrt(np.sum((rel / phantom.head_semi_axes.astype(np.float32)) ** 2, axis=-1)) / np.maximum(rho, 1e-6)
    depth = (1.0 - rho) / np.maximum(grad, 1e-6)

    spacing = np.array([grid.col_spacing, grid.row_spacing, grid.slice_spacing], np.float32)
    edge = float(np.exp(np.mean(np.log(spacing))))
    label_floor = 0.55 * float(spacing.min())
    shape = grid.shape
    vessel_margin = np.full(shape, -np.inf, np.float32)
    label_margin = np.full(shape, -np.inf, np.float32)
    labels = np.zeros(shape, np.uint8)
    sac_margin = np.full(shape, -np.inf, np.float32)

    origin = np.asarray(grid.origin, np.float32)
    to_voxel = np.linalg.inv(grid.axes()).T.astype(np.float32)
    limits = np.array([grid.cols, grid.rows, grid.slices])

    def draw(points: np.ndarray, radii: np.ndarray, label: int, target: np.ndarray) -> None:
        """Rasterise the capsules between consecutive ``points`` (head frame) into ``target``.

        Pieces go in runs of a few, each run over its own bounding box: small boxes, few Python calls.
        """
        pts = phantom.to_lps(points).astype(np.float32)
        radii = np.asarray(radii, np.float32)
        if len(pts) == 1:
            pts, radii = np.repeat(pts, 2, axis=0), np.repeat(radii, 2)
        ijk = (pts - origin) @ to_voxel
        for c in range(0, len(pts) - 1, 6):
            run_pts, run_ijk, run_r = pts[c:c + 7], ijk[c:c + 7], radii[c:c + 7]
            pad = (max(float(run_r.max()), label_floor) + edge) / spacing
            lo = np.maximum(np.floor(run_ijk.min(axis=0) - pad).astype(int), 0)
            hi = np.minimum(np.ceil(run_ijk.max(axis=0) + pad).astype(int) + 1, limits)
            if np.any(hi <= lo):
                continue
            box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
            q = lps[box]
            a, b = run_pts[:-1], run_pts[1:]
            ab = b - a
            denom = np.maximum(np.einsum("pk,pk->p", ab, ab), 1e-12)
            rel = q[..., None, :] - a
            t = np.clip(np.einsum("...pk,pk->...p", rel, ab) / denom, 0.0, 1.0)
            dist = np.sqrt(np.sum((rel - t[..., None] * ab) ** 2, axis=-1))
            radius = run_r[:-1] + (run_r[1:] - run_r[:-1]) * t
            np.maximum(target[box], (radius - dist).max(axis=-1), out=target[box])
            lmargin = (np.maximum(radius, label_floor) - dist).max(axis=-1)
            better = lmargin > label_margin[box]
            label_margin[box][better] = lmargin[better]
            labels[box][better & (lmargin > 0)] = label

    for tube in phantom.tubes:
        draw(tube.points, tube.radii, tube.label, vessel_margin)
    for sac in phantom.aneurysms:
        parent = LOCATION_TO_VESSEL[sac.location]
        draw(sac.centre[None], np.array([sac.radius]), parent, sac_margin)
        draw(np.stack([sac.neck, sac.centre]), np.full(2, 0.55 * sac.radius), parent, sac_margin)
        if sac.bleb is not None:
            draw(sac.bleb[0][None], np.array([sac.bleb[1]]), parent, sac_margin)

    def soft(margin: np.ndarray) -> np.ndarray:
        return np.clip(0.5 + margin / edge, 0.0, 1.0).astype(np.float32)

    return Fields(depth.astype(np.float32), soft(vessel_margin), soft(sac_margin), labels, head_xyz)
