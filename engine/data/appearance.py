"""How each modality shows the phantom: tissue values, contrast, texture, noise and pixel storage.

Values are physical (Hounsfield units for CT, arbitrary scanner units for MR), drawn per case from
modality-specific ranges, so that a model sees one look per modality with some spread:

- CTA: bright contrast-filled vessels (250..450 HU), bright skull, brain 30..40 HU, Gaussian noise.
- MRA (time of flight): bright vessels on dark, fat-suppressed background, skull dark, Rician noise.
- MRI T2: grey brain, bright CSF, dark flow voids in the arteries (and sacs), Rician noise.
- MRI T1post: enhancing vessels with low contrast to the brain, bright scalp fat, Rician noise.

:class:`PixelStorage` states how values become stored integers (RescaleSlope/Intercept, signedness),
with the scanner-like variety that conversion must honour (12-bit unsigned CT with intercept -1024,
signed CT, MR with a rescale slope).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from engine.data.phantom import Fields


@dataclass(frozen=True)
class PixelStorage:
    """Stored-value encoding of one series: value = stored * slope + intercept."""

    signed: bool
    bits_stored: int
    slope: float
    intercept: float
    rescale_type: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("<i2" if self.signed else "<u2")

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Physical values -> stored integers, clipped to what ``bits_stored`` can hold."""
        stored = np.rint((values - self.intercept) / self.slope)
        if self.signed:
            lo, hi = -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1
        else:
            lo, hi = 0, 2 ** self.bits_stored - 1
        return np.clip(stored, lo, hi).astype(self.dtype)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        return stored.astype(np.float64) * self.slope + self.intercept


#: Per modality: tissue values, the sac's value relative to the vessel's, noise and texture sigmas;
#: each a (low, high) range drawn once per series.
_LOOKS: dict[str, dict[str, tuple[float, float]]] = {
    "CTA": {"air": (-1000, -1000), "scalp": (10, 40), "skull": (1000, 1500), "csf": (0, 10), "brain": (30, 40),
            "vessel": (250, 450), "sac": (0.9, 1.0), "noise": (6, 14), "texture": (3, 6)},
    "MRA": {"air": (0, 5), "scalp": (80, 140), "skull": (10, 30), "csf": (30, 60), "brain": (160, 220),
            "vessel": (600, 900), "sac": (0.7, 0.9), "noise": (10, 20), "texture": (10, 20)},
    "MRI T2": {"air": (0, 5), "scalp": (250, 350), "skull": (20, 40), "csf": (1200, 1600), "brain": (500, 700),
               "vessel": (40, 90), "sac": (1.2, 1.8), "noise": (15, 30), "texture": (40, 70)},
    "MRI T1post": {"air": (0, 5), "scalp": (600, 800), "skull": (30, 50), "csf": (120, 180), "brain": (400, 500),
                   "vessel": (560, 680), "sac": (0.95, 1.05), "noise": (12, 24), "texture": (20, 35)},
}
#: Depth (mm below the head surface) where scalp, skull, CSF and brain begin.
_LAYERS = (("scalp", 0.0), ("skull", 5.0), ("csf", 12.0), ("brain", 15.0))


def storage_for(modality: str, rng: np.random.Generator, multiframe: bool = False) -> PixelStorage:
    """The pixel encoding of a series of ``modality``, with the variety real scanners show.

    Multi-frame CT is always signed with intercept 0: dicom2nifti rescales each frame in the stored
    dtype, and under NumPy 2 an unsigned frame with intercept -1024 raises OverflowError there.
    """
    if modality == "CTA":
        if rng.random() < 0.7 and not multiframe:
            return PixelStorage(False, 12, 1.0, -1024.0, "HU")
        return PixelStorage(True, 16, 1.0, 0.0, "HU")
    slope = 2.0 if rng.random() < 0.3 else 1.0
    return PixelStorage(False, 16 if slope == 1.0 else 12, slope, 0.0, "US")


def synthesize(modality: str, fields: Fields, rng: np.random.Generator, spacing_mm: float) -> np.ndarray:
    """Physical intensities (float32, (slices, rows, cols)) of the phantom in ``modality``."""
    look = {k: float(rng.uniform(*v)) for k, v in _LOOKS[modality].items()}
    shape = fields.depth.shape
    edge = max(spacing_mm, 1.0)
    # Smooth tissue texture (grey/white matter-like) and, for MR, a receive-coil bias field.
    texture = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=max(1.0, 4.0 / spacing_mm))
    texture *= look["texture"] / max(float(texture.std()), 1e-6)

    image = np.full(shape, look["air"], np.float32)
    for tissue, start in _LAYERS:
        weight = np.clip(0.5 + (fields.depth - start) / edge, 0.0, 1.0)
        value = look[tissue] + (texture if tissue in ("brain", "skull") else 0.0)
        if tissue == "skull" and modality == "CTA":
            value = value + 12.0 * texture  # diploe: a coarser bone texture
        image += weight * (value - image)
    inside = np.clip(0.5 + fields.depth / edge, 0.0, 1.0)
    image += fields.vessel * inside * (look["vessel"] - image)
    image += fields.aneurysm * inside * (look["vessel"] * look["sac"] - image)

    if modality == "CTA":
        image += rng.normal(0.0, look["noise"], shape).astype(np.float32)
    else:
        xyz = fields.head_xyz
        gradient = rng.uniform(-1, 1, 3).astype(np.float32) / 400.0
        image *= 1.0 + xyz @ gradient
        noise = look["noise"]
        real = image + rng.normal(0.0, noise, shape).astype(np.float32)
        imag = rng.normal(0.0, noise, shape).astype(np.float32)
        image = np.sqrt(real * real + imag * imag)
    return image.astype(np.float32)
