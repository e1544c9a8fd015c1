"""The Kaggle-layout reader: tables parsed, schema problems reported with file, line, column and value."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from engine.data.kaggle import KaggleDataset, KaggleSchemaError, parse_coordinates
from engine.labels import LABEL_COLUMNS, LOCALIZER_COLUMNS, LOCATIONS, TRAIN_COLUMNS

SERIES = ("1.2.826.0.1.3680043.8.498.101", "1.2.826.0.1.3680043.8.498.102")


def _train_row(uid: str, modality: str = "CTA", positive: int = 1) -> dict:
    row = {"SeriesInstanceUID": uid, "PatientAge": "61", "PatientSex": "Female", "Modality": modality}
    row.update({c: 0 for c in LABEL_COLUMNS})
    row[LOCATIONS[6]] = positive
    row["Aneurysm Present"] = positive
    return row


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A Kaggle-layout folder with two series (two slice files each) and valid tables."""
    root = tmp_path / "kaggle"
    for uid in SERIES:
        (root / "series" / uid).mkdir(parents=True)
        for k in (1, 2):
            (root / "series" / uid / f"{uid}.{k}.dcm").write_bytes(b"")
    pd.DataFrame([_train_row(SERIES[0]), _train_row(SERIES[1], "MRI T2", 0)], columns=TRAIN_COLUMNS).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame([[SERIES[0], f"{SERIES[0]}.2", "{'x': 258.36, 'y': 261.36}", LOCATIONS[6]]],
                 columns=LOCALIZER_COLUMNS).to_csv(root / "train_localizers.csv", index=False)
    return root


def test_valid_tables_are_read(dataset: Path) -> None:
    data = KaggleDataset.open(dataset, "train")
    assert data.series_uids() == list(SERIES)
    table = data.read_table()
    assert list(table.columns) == list(TRAIN_COLUMNS) and table["Aneurysm Present"].tolist() == [1, 0]
    (point,) = data.read_localizers()
    assert (point.series_uid, point.sop_uid, point.x, point.y, point.frame) == (
        SERIES[0], f"{SERIES[0]}.2", 258.36, 261.36, None)
    assert point.label == 20 and point.line == 2  # AComm -> 13 + 7
    data.check_localizers([point])  # refers to an existing slice: no error


def test_missing_series_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(KaggleSchemaError, match=r"series.*does not exist"):
        KaggleDataset.open(tmp_path, "train")
    with pytest.raises(KaggleSchemaError, match="unknown split"):
        KaggleDataset.open(tmp_path, "validation")


def test_missing_column_is_named(dataset: Path) -> None:
    table = pd.read_csv(dataset / "train.csv").drop(columns=["Modality"])
    table.to_csv(dataset / "train.csv", index=False)
    with pytest.raises(KaggleSchemaError, match=r"train\.csv: missing column 'Modality'"):
        KaggleDataset.open(dataset).read_table()
    localizers = pd.read_csv(dataset / "train_localizers.csv").drop(columns=["coordinates"])
    localizers.to_csv(dataset / "train_localizers.csv", index=False)
    with pytest.raises(KaggleSchemaError, match=r"train_localizers\.csv: missing column 'coordinates'"):
        KaggleDataset.open(dataset).read_localizers()


def test_unknown_modality_names_line_series_and_value(dataset: Path) -> None:
    table = pd.read_csv(dataset / "train.csv", dtype=str)
    table.loc[1, "Modality"] = "PET"
    table.to_csv(dataset / "train.csv", index=False)
    with pytest.raises(KaggleSchemaError, match=rf"line 3 \(series {SERIES[1]}\): unknown modality 'PET'"):
        KaggleDataset.open(dataset).read_table()


def test_label_columns_must_be_binary(dataset: Path) -> None:
    table = pd.read_csv(dataset / "train.csv", dtype=str)
    table.loc[0, "Basilar Tip"] = "yes"
    table.to_csv(dataset / "train.csv", index=False)
    with pytest.raises(KaggleSchemaError, match="'Basilar Tip' must be 0 or 1"):
        KaggleDataset.open(dataset).read_table()


@pytest.mark.parametrize("text", [
    "{'x': 258.3, 'y': }",  # truncated
    "__import__('os').system('echo never')",  # code is refused, not run
    "[258.3, 261.4]",  # not a dict
    "{'x': 'a', 'y': 1}",  # not numbers
    "{'x': 1, 'y': 2, 'z': 3}",  # unknown key
    "{'x': 1, 'y': 2, 'f': -1}",  # bad frame
])
def test_malformed_coordinates_are_refused(dataset: Path, text: str) -> None:
    localizers = pd.read_csv(dataset / "train_localizers.csv", dtype=str)
    localizers.loc[0, "coordinates"] = text
    localizers.to_csv(dataset / "train_localizers.csv", index=False)
    with pytest.raises(KaggleSchemaError, match=r"train_localizers\.csv line 2 .*coordinates"):
        KaggleDataset.open(dataset).read_localizers()


def test_frame_key_of_multiframe_points() -> None:
    assert parse_coordinates("{'x': 10.5, 'y': 20, 'f': 7}", "here") == (10.5, 20.0, 7)


def test_unknown_location_is_named(dataset: Path) -> None:
    localizers = pd.read_csv(dataset / "train_localizers.csv", dtype=str)
    localizers.loc[0, "location"] = "Left Vertebral Artery"
    localizers.to_csv(dataset / "train_localizers.csv", index=False)
    with pytest.raises(KaggleSchemaError, match="unknown location 'Left Vertebral Artery'"):
        KaggleDataset.open(dataset).read_localizers()


def test_localizer_without_series_or_slice_is_named(dataset: Path) -> None:
    rows = [[SERIES[0], "1.2.3.404", "{'x': 1, 'y': 2}", LOCATIONS[0]],
            ["1.2.3.999", "1.2.3.405", "{'x': 1, 'y': 2}", LOCATIONS[1]]]
    pd.DataFrame(rows, columns=LOCALIZER_COLUMNS).to_csv(dataset / "train_localizers.csv", index=False)
    data = KaggleDataset.open(dataset)
    points = data.read_localizers()
    problems = data.localizer_problems(points)
    assert problems == [
        f"train_localizers.csv line 2: SOPInstanceUID 1.2.3.404 is not a file of series {SERIES[0]}",
        f"train_localizers.csv line 3: series 1.2.3.999 has no folder in {data.series_dir}",
    ]
    with pytest.raises(KaggleSchemaError, match="1.2.3.404.*1.2.3.999"):
        data.check_localizers(points)


def test_optional_tables_and_test_split(dataset: Path) -> None:
    (dataset / "test" / "series" / "9.9").mkdir(parents=True)
    test = KaggleDataset.open(dataset, "test")
    assert test.series_uids() == ["9.9"]
    assert test.read_table() is None and test.read_localizers() is None  # a test copy has only series/
    pd.DataFrame([_train_row("9.9")], columns=TRAIN_COLUMNS).to_csv(dataset / "test" / "test_truth.csv", index=False)
    assert test.read_table()["SeriesInstanceUID"].tolist() == ["9.9"]


def test_segmentation_in_both_layouts(dataset: Path) -> None:
    data = KaggleDataset.open(dataset)
    assert data.segmentation(SERIES[0]) is None
    nested = dataset / "segmentations" / SERIES[0] / f"{SERIES[0]}_cowseg.nii"
    flat = dataset / "segmentations" / f"{SERIES[1]}_cowseg.nii.gz"
    nested.parent.mkdir(parents=True)
    nested.write_bytes(b"")
    flat.write_bytes(b"")
    (dataset / "segmentations" / SERIES[0] / f"{SERIES[0]}.nii").write_bytes(b"")  # the image, not the labels
    assert data.segmentation(SERIES[0]) == nested
    assert data.segmentation(SERIES[1]) == flat
