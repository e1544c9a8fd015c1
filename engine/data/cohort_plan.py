"""The plan of a demo cohort: which series exist, what they show and how they are acquired.

Everything random about the cohort as a whole is decided here, from the seed alone, before any
pixel is drawn: modalities in the competition's proportions, positives at the competition's rate per
modality, the number of aneurysms per positive series and their locations at the competition's
frequencies (COMPETITION.md), a held-out split stratified by ``Aneurysm Present`` in which every location
column has a positive, or more (so that a demo can be scored), the acquisition
kind of each series (axial / sagittal / coronal, reversed slice order, single-file multi-frame),
which series ship a vessel segmentation, and which are broken on purpose (``defects``).

Small cohorts (tests) still get every acquisition kind: one positive training series each is made
sagittal, coronal, reversed (axial) and multi-frame (with frames in reversed order), and these four
always have a segmentation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.uid import generate_uid

from engine.labels import LOCATIONS, MODALITIES

#: Series per modality in the competition's training table (4,405 series).
MODALITY_COUNTS: dict[str, int] = {"CTA": 1857, "MRA": 1256, "MRI T2": 986, "MRI T1post": 306}
#: Share of series with an aneurysm, per modality.
POSITIVE_RATE: dict[str, float] = {"CTA": 0.54, "MRA": 0.44, "MRI T2": 0.26, "MRI T1post": 0.25}
#: Positive series per location, in competition column order.
LOCATION_COUNTS: tuple[int, ...] = (79, 99, 340, 282, 220, 299, 366, 46, 56, 87, 101, 113, 115)
#: Positive series by number of aneurysm locations (1..5).
LOCATIONS_PER_POSITIVE: tuple[int, ...] = (1642, 204, 38, 6, 3)
#: Share of training series that ship a vessel segmentation (the competition: 178 of 4,405; the demo
#: needs many more, since stage 1 learns from them).
SEGMENTATION_FRACTION = 0.5
#: Random acquisition kinds beyond the guaranteed ones.
ORIENTATION_WEIGHTS: dict[str, float] = {"axial": 0.8, "sagittal": 0.1, "coronal": 0.1}
REVERSED_RATE = 0.15
MULTIFRAME_RATE = 0.06
#: The broken series of ``defects=true``, one each.
DEFECTS: tuple[str, ...] = ("missing_slice", "duplicate_position", "truncated_file", "non_image_object")
_GUARANTEED: tuple[str, ...] = ("sagittal", "coronal", "reversed", "multiframe")


@dataclass(frozen=True)
class SeriesPlan:
    """One series of the cohort, before rendering."""

    index: int
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    patient_id: str
    modality: str
    age: int
    sex: str                   # Female / Male, as in train.csv
    locations: tuple[int, ...]  # 0-based competition location indices, sorted
    split: str                 # train / test
    orientation: str           # axial / sagittal / coronal
    reversed: bool             # InstanceNumber runs against the slice normal
    multiframe: bool           # one Enhanced multi-frame file instead of one file per slice
    segmentation: bool         # ships segmentations/<uid>/<uid>.nii and <uid>_cowseg.nii
    defect: str                # "" or one of DEFECTS

    @property
    def positive(self) -> bool:
        return bool(self.locations)


def apportion(total: int, weights: list[float]) -> list[int]:
    """Largest-remainder split of ``total`` in proportion to ``weights`` (ties go to the earlier entry)."""
    shares = np.asarray(weights, float) / float(np.sum(weights)) * total
    counts = np.floor(shares).astype(int)
    order = sorted(range(len(weights)), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def expected_positives(modality_count: int, modality: str) -> int:
    """Positive series of one modality: its competition rate, rounded half up."""
    return int(modality_count * POSITIVE_RATE[modality] + 0.5)


def uid(root: tuple[str, ...], *parts: object) -> str:
    """A UID fixed by the cohort's parameters (``root``) and a path of names."""
    return generate_uid(entropy_srcs=[*root, *map(str, parts)])


def _cover_locations_in_test(locations: list[tuple[int, ...]], split: list[str], minimum: int = 1) -> None:
    """Give every location column at least ``minimum`` positives in the held-out split, in place.

    The competition metric is undefined for a column with a single class, so a demo whose test
    split misses a rare location could not be scored; with one positive a column's AUC is all or
    nothing, hence ``minimum`` = 2 for a score that means something. Missing locations are added to
    the test positives with the fewest locations (at most 5 each, never twice the same); negatives
    stay negative, so the ``Aneurysm Present`` rate is untouched. This skews the locations per
    positive of the held-out split only.
    """
    test_positives = [i for i in range(len(locations)) if split[i] == "test" and locations[i]]
    for loc in range(len(LOCATIONS)):
        while sum(loc in locations[i] for i in test_positives) < minimum:
            open_slots = [i for i in test_positives
                          if len(locations[i]) < len(LOCATIONS_PER_POSITIVE) and loc not in locations[i]]
            if not open_slots:
                break
            target = min(open_slots, key=lambda i: (len(locations[i]), i))
            locations[target] = tuple(sorted((*locations[target], loc)))


def plan_cohort(n: int, seed: int, test_fraction: float, defects: bool, root: tuple[str, ...],
                test_location_positives: int = 1) -> list[SeriesPlan]:
    """The plan of ``n`` series; ``root`` (the parameters as strings) makes the UIDs.

    ``test_location_positives``: positives each location column gets at least in the held-out split
    (as far as its positives have room, see :func:`_cover_locations_in_test`).
    """
    rng = np.random.default_rng([seed, 0])
    counts = apportion(n, list(MODALITY_COUNTS.values()))
    modalities = [m for m, c in zip(MODALITIES, counts) for _ in range(c)]
    positive = []
    for m, c in zip(MODALITIES, counts):
        k = expected_positives(c, m)
        positive += [True] * k + [False] * (c - k)
    if n >= 2 and not any(positive):
        positive[0] = True
    order = rng.permutation(n)
    modalities = [modalities[i] for i in order]
    positive = [positive[i] for i in order]

    split = ["train"] * n
    for value in (True, False):
        members = [i for i in range(n) if positive[i] == value]
        n_test = int(len(members) * test_fraction + 0.5)
        for i in rng.permutation(members)[:n_test]:
            split[int(i)] = "test"

    loc_weights = np.asarray(LOCATION_COUNTS, float) / sum(LOCATION_COUNTS)
    per_positive = np.asarray(LOCATIONS_PER_POSITIVE, float) / sum(LOCATIONS_PER_POSITIVE)
    locations: list[tuple[int, ...]] = []
    for i in range(n):
        if positive[i]:
            k = int(rng.choice(np.arange(1, 6), p=per_positive))
            chosen = rng.choice(len(LOCATIONS), size=k, replace=False, p=loc_weights)
            locations.append(tuple(sorted(int(x) for x in chosen)))
        else:
            locations.append(())

    _cover_locations_in_test(locations, split, test_location_positives)

    orientation = [str(rng.choice(list(ORIENTATION_WEIGHTS), p=list(ORIENTATION_WEIGHTS.values()))) for _ in range(n)]
    reversed_ = [bool(rng.random() < REVERSED_RATE) for _ in range(n)]
    multiframe = [bool(rng.random() < MULTIFRAME_RATE) for _ in range(n)]

    train = [i for i in range(n) if split[i] == "train"]
    shuffled = [int(i) for i in rng.permutation(train)]
    guaranteed = ([i for i in shuffled if positive[i]] + [i for i in shuffled if not positive[i]])[: len(_GUARANTEED)]
    for i, kind in zip(guaranteed, _GUARANTEED):
        orientation[i] = kind if kind in ORIENTATION_WEIGHTS else "axial"
        reversed_[i] = kind in ("reversed", "multiframe")  # frame order against the normal: the harder case
        multiframe[i] = kind == "multiframe"

    others = [int(i) for i in rng.permutation(train) if int(i) not in guaranteed]
    defect = [""] * n
    if defects:
        if len(others) < len(DEFECTS):
            raise ValueError(f"defects=true needs at least {len(DEFECTS) + len(_GUARANTEED)} training series; "
                             f"n={n} with test_fraction={test_fraction} gives {len(train)}")
        for i, name in zip(others[-len(DEFECTS):], DEFECTS):
            defect[i] = name
            multiframe[i] = False
    segmentation = [False] * n
    for i in guaranteed:
        segmentation[i] = True
    healthy = [i for i in others if not defect[i]]
    for i in healthy[: int(len(healthy) * SEGMENTATION_FRACTION + 0.5)]:
        segmentation[i] = True

    plans = []
    for i in range(n):
        age = int(np.clip(round(rng.normal(58, 14)), 18, 89))
        sex = "Female" if rng.random() < 0.68 else "Male"
        series_uid = uid(root, "series", i)
        plans.append(SeriesPlan(
            index=i, series_uid=series_uid, study_uid=uid(root, "study", i),
            frame_of_reference_uid=uid(root, "frame of reference", i), patient_id=f"ID_{series_uid[-10:]}",
            modality=modalities[i], age=age, sex=sex, locations=locations[i], split=split[i],
            orientation=orientation[i], reversed=reversed_[i], multiframe=multiframe[i],
            segmentation=segmentation[i], defect=defect[i],
        ))
    return plans
