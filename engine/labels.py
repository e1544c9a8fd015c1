"""Label vocabularies of the competition and of the stage-2 model (MODEL_SPEC sections 4 and 8).

Everything that names a column, a vessel or a modality lives here so that the demo generator,
conversion, training and inference agree on one order.
"""
from __future__ import annotations

#: The 13 location columns of ``train.csv``, in competition (and submission) order.
LOCATIONS: tuple[str, ...] = (
    "Left Infraclinoid Internal Carotid Artery",
    "Right Infraclinoid Internal Carotid Artery",
    "Left Supraclinoid Internal Carotid Artery",
    "Right Supraclinoid Internal Carotid Artery",
    "Left Middle Cerebral Artery",
    "Right Middle Cerebral Artery",
    "Anterior Communicating Artery",
    "Left Anterior Cerebral Artery",
    "Right Anterior Cerebral Artery",
    "Left Posterior Communicating Artery",
    "Right Posterior Communicating Artery",
    "Basilar Tip",
    "Other Posterior Circulation",
)
ANEURYSM_PRESENT = "Aneurysm Present"
#: The 14 label columns, in submission order.
LABEL_COLUMNS: tuple[str, ...] = (*LOCATIONS, ANEURYSM_PRESENT)
#: The 18 columns of ``train.csv``, in order.
TRAIN_COLUMNS: tuple[str, ...] = ("SeriesInstanceUID", "PatientAge", "PatientSex", "Modality", *LABEL_COLUMNS)
LOCALIZER_COLUMNS: tuple[str, ...] = ("SeriesInstanceUID", "SOPInstanceUID", "coordinates", "location")

#: Modalities and the class index of the modality head.
MODALITIES: tuple[str, ...] = ("CTA", "MRA", "MRI T2", "MRI T1post")
MODALITY_INDEX: dict[str, int] = {m: i for i, m in enumerate(MODALITIES)}

#: Vessel labels 1..13 of the ``_cowseg`` masks (index 0 is background).
VESSELS: tuple[str, ...] = (
    "Other Posterior Circulation",
    "Basilar Tip",
    "Right PComm",
    "Left PComm",
    "Right Infraclinoid ICA",
    "Left Infraclinoid ICA",
    "Right Supraclinoid ICA",
    "Left Supraclinoid ICA",
    "Right MCA",
    "Left MCA",
    "Right ACA",
    "Left ACA",
    "AComm",
)
N_VESSELS = len(VESSELS)

#: Vessel label (1..13) -> the 0-based competition location index it belongs to.
VESSEL_TO_LOCATION: dict[int, int] = {
    1: 12, 2: 11, 3: 10, 4: 9, 5: 1, 6: 0, 7: 3, 8: 2, 9: 5, 10: 4, 11: 8, 12: 7, 13: 6,
}
LOCATION_TO_VESSEL: dict[int, int] = {loc: v for v, loc in VESSEL_TO_LOCATION.items()}


def aneurysm_label(location: int | str) -> int:
    """Stage-2 label (14..26) of an aneurysm at a location (0-based index or column name)."""
    index = LOCATIONS.index(location) if isinstance(location, str) else int(location)
    return 14 + index


#: Left/right swap of the 13 location logits (competition order); AComm, Basilar Tip and Other
#: Posterior Circulation map to themselves.
LR_SWAP: tuple[int, ...] = (1, 0, 3, 2, 5, 4, 6, 8, 7, 10, 9, 11, 12)

#: Competition metric weights: 1 per location, 13 for Aneurysm Present.
COLUMN_WEIGHTS: dict[str, float] = {**{c: 1.0 for c in LOCATIONS}, ANEURYSM_PRESENT: 13.0}
