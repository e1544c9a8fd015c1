"""The case table: sort orders, filters and the rows as text, shared by the CLI and the screen.

A false positive is a series without an aneurysm whose Aneurysm Present probability is at least the
threshold (0.5 by default), a false negative one with an aneurysm below it. Sorting is by the
absolute error of Aneurysm Present by default, largest first; cases without truth go last.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rsna_tui.review.cases import Case

SORTS = ("error", "probability", "uid", "modality", "seconds")
FILTERS = ("all", "fp", "fn", "fallback", "failed")
FILTER_NAMES = {"all": "all cases", "fp": "false positives", "fn": "false negatives",
                "fallback": "fallbacks", "failed": "failed series"}
HEADERS = ["series", "modality", "truth", "p(present)", "error", "top location", "true locations", "fallback",
           "seconds"]


@dataclass(frozen=True)
class View:
    """What the table shows: one filter, an optional modality, one sort order."""

    filter: str = "all"
    modality: str = ""
    sort: str = "error"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.filter not in FILTERS:
            raise ValueError(f"unknown filter {self.filter!r}; filters: {', '.join(FILTERS)}")
        if self.sort not in SORTS:
            raise ValueError(f"unknown sort {self.sort!r}; sorts: {', '.join(SORTS)}")


def keep(case: Case, view: View) -> bool:
    if view.modality and case.modality.lower() != view.modality.lower():
        return False
    truth, predicted = case.true_present, case.present >= view.threshold
    return {
        "all": True,
        "fp": truth == 0 and predicted,
        "fn": truth == 1 and not predicted,
        "fallback": case.has_fallback,
        "failed": case.failed,
    }[view.filter]


def sort_key(view: View):  # type: ignore[no-untyped-def]
    """Key for ``sorted``: the chosen column (largest first for numbers), ties by UID."""
    if view.sort == "error":
        return lambda c: (c.abs_error is None, -(c.abs_error or 0.0), c.uid)
    if view.sort == "probability":
        return lambda c: (-c.present, c.uid)
    if view.sort == "seconds":
        return lambda c: (c.seconds is None, -(c.seconds or 0.0), c.uid)
    if view.sort == "modality":
        return lambda c: (c.modality, c.uid)
    return lambda c: c.uid


def select(cases: Sequence[Case], view: View = View()) -> list[Case]:
    """The cases the view shows, in its order."""
    return sorted((c for c in cases if keep(c, view)), key=sort_key(view))


def abbreviate(location: str) -> str:
    """Short location names for narrow tables ("Left Supraclinoid Internal Carotid Artery" -> "L Supraclin ICA")."""
    words = {"Left": "L", "Right": "R", "Internal Carotid Artery": "ICA", "Middle Cerebral Artery": "MCA",
             "Anterior Cerebral Artery": "ACA", "Anterior Communicating Artery": "AComm",
             "Posterior Communicating Artery": "PComm", "Infraclinoid": "Infra", "Supraclinoid": "Supra",
             "Other Posterior Circulation": "Other Post", "Basilar Tip": "Basilar"}
    for long, short in words.items():
        location = location.replace(long, short)
    return location


def row_cells(case: Case) -> list[str]:
    """One table row as text, in :data:`HEADERS` order."""
    truth = "" if case.true_present is None else str(case.true_present)
    error = "" if case.abs_error is None else f"{case.abs_error:.3f}"
    fallback = "+".join(x for x in (case.fallback, f"box:{case.box_fallback}" if case.box_fallback else "",
                                    "slice gap" if case.slice_gap else "") if x)
    if case.failed:
        fallback = (fallback + " " if fallback else "") + (case.error or case.status)
    seconds = "" if case.seconds is None else f"{case.seconds:.1f}"
    true_locations = ", ".join(abbreviate(x) for x in case.true_locations)
    return [case.short, case.modality, truth, f"{case.present:.3f}", error, abbreviate(case.top_location),
            true_locations, fallback, seconds]
