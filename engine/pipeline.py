"""The demo pipeline: every stage in order, on the embedded synthetic cohort.

``rsna-tui pipeline`` (and so ``make demo``) submits these steps as jobs, each depending on the
previous one. Overrides are applied on top of the chosen profile.
"""
from __future__ import annotations

from typing import Any

DEMO_PIPELINE: list[tuple[str, dict[str, Any]]] = [
    ("demo-data", {}),
    ("convert", {"split": "train"}),
    ("convert", {"split": "test"}),
    ("stage1-data", {}),
    ("train2d", {}),
    ("roi", {"split": "train"}),
    ("roi", {"split": "test"}),
    ("train3d", {}),
    ("finetune1", {}),
    ("finetune2", {}),
    ("predict", {"split": "test"}),
]
