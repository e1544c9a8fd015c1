"""Registered datasets (issue 12): add checked by the Kaggle reader (its message as is), list, show,
remove (the data stays), the summary's counts against the cohort's own tables, and dataset names or
paths in stage parameters."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from engine.context import StageContext
from engine.data import convert
from engine.data.kaggle import KaggleDataset, KaggleSchemaError
from engine.labels import LABEL_COLUMNS, MODALITIES
from rsna_tui.datasets import DatasetError, add_dataset, dataset_summary, list_datasets, remove_dataset


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def cohort(demo_cohort: Path, tmp_path: Path) -> Path:
    """A copy of the session's demo cohort that a test may break."""
    return Path(shutil.copytree(demo_cohort, tmp_path / "cohort", symlinks=True))


def test_add_list_show_remove(cli, workspace: Path, demo_cohort: Path) -> None:
    before = files(demo_cohort)
    added = cli("datasets", "add", "mine", str(demo_cohort)).stdout.split("\t")
    assert added[:2] == ["mine", str(demo_cohort)] and added[2].strip() == "train,test"
    link = workspace / "datasets" / "mine"
    assert link.is_symlink() and link.resolve() == demo_cohort.resolve()
    listed = json.loads(cli("datasets", "--json").stdout)
    assert [(d["name"], d["kind"], d["path"]) for d in listed] == [("mine", "link", str(demo_cohort))]
    train = listed[0]["splits"]["train"]
    table = rows(demo_cohort / "train.csv")
    assert train["series"] == len(table) == 9 and listed[0]["splits"]["test"]["series"] == 3
    assert train["modalities"] == {m: n for m in MODALITIES if (n := sum(r["Modality"] == m for r in table))}
    assert train["positives"] == {c: sum(int(r[c]) for r in table) for c in LABEL_COLUMNS}
    assert train["localizers"] == len(rows(demo_cohort / "train_localizers.csv"))
    segmentations = {p.name.split("_cowseg")[0] for p in (demo_cohort / "segmentations").rglob("*_cowseg.nii*")}
    assert train["segmentations"] == len(segmentations & {r["SeriesInstanceUID"] for r in table}) >= 4
    assert train["conversion"] is None  # not converted yet
    shown = cli("datasets", "show", "mine").stdout
    assert f"train: 9 series (train.csv)" in shown and "conversion    not converted" in shown
    assert "mine\ttrain\t9\t" in cli("datasets").stdout

    assert cli("datasets", "remove", "mine").stdout.strip() == f"removed mine (the data stays in {demo_cohort})"
    assert not link.exists() and files(demo_cohort) == before
    assert json.loads(cli("datasets", "--json").stdout) == []
    gone = cli("datasets", "remove", "mine", check=False)
    assert gone.returncode == 2 and "no dataset 'mine'" in gone.stderr and "registered: none" in gone.stderr


def test_add_refuses_what_the_kaggle_reader_refuses_with_its_message(cli, workspace: Path, demo_cohort: Path,
                                                                       tmp_path: Path) -> None:
    def broken(name: str, table: str, old: str, new: str) -> Path:
        folder = Path(shutil.copytree(demo_cohort, tmp_path / name, symlinks=True))
        (folder / table).write_text((folder / table).read_text().replace(old, new, 1))
        return folder

    def refused(folder: Path) -> str:
        result = cli("datasets", "add", folder.name, str(folder), check=False)
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        return result.stderr.strip()

    # a bad column and a bad localizer row: the reader's own message, word for word
    column = broken("column", "train.csv", "Modality", "Modalitaet")
    with pytest.raises(KaggleSchemaError) as reader:
        KaggleDataset.open(column, "train").read_table()
    assert refused(column) == f"error: {reader.value}" and "Modality" in str(reader.value)
    location = broken("location", "train_localizers.csv", ",Right Middle Cerebral Artery", ",Left Elbow")
    with pytest.raises(KaggleSchemaError) as reader:
        KaggleDataset.open(location, "train").read_localizers()
    assert refused(location) == f"error: {reader.value}" and "unknown location 'Left Elbow'" in str(reader.value)
    # no series/ folder: the reader's message for the train split
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KaggleSchemaError) as reader:
        KaggleDataset.open(empty, "train")
    assert refused(empty) == f"error: {reader.value}"
    # a series folder that cannot be listed (a dangling link; root reads any mode bits)
    unreadable = Path(shutil.copytree(demo_cohort, tmp_path / "unreadable", symlinks=True))
    shutil.rmtree(unreadable / "test")
    shutil.move(unreadable / "series", tmp_path / "moved")
    (unreadable / "series").symlink_to(tmp_path / "gone")
    assert "series does not exist" in refused(unreadable)
    # not a folder, a reserved or bad name, a name taken
    assert "is not a folder" in cli("datasets", "add", "x", str(column / "train.csv"), check=False).stderr
    assert "demo-data stage" in cli("datasets", "add", "demo", str(demo_cohort), check=False).stderr
    assert "use letters" in cli("datasets", "add", "a/b", str(demo_cohort), check=False).stderr
    cli("datasets", "add", "ok", str(demo_cohort))
    taken = cli("datasets", "add", "ok", str(demo_cohort), check=False)
    assert taken.returncode == 2 and "exists already" in taken.stderr
    assert [d["name"] for d in list_datasets(workspace)] == ["ok"]


def test_summary_counts_the_conversion_outcome(workspace: Path, cohort: Path) -> None:
    add_dataset(workspace, "mine", cohort)
    ctx = StageContext.for_folder(workspace)
    convert.run({"dataset": "mine", "split": "train", "workers": 1, "seed": 0}, ctx)
    outcome = dataset_summary(workspace, "mine")["splits"]["train"]["conversion"]
    table = rows(workspace / "converted" / "mine" / "train" / "conversion.csv")
    status = [r["status"] for r in table]
    assert outcome["total"] == 9 == outcome["converted"] + outcome["fallback"] + outcome["failed"]
    assert (outcome["converted"], outcome["fallback"], outcome["failed"]) == (
        status.count("converted"), status.count("converted_fallback"), status.count("failed"))
    assert sum(outcome["fallback_kinds"].values()) >= outcome["fallback"]
    assert dataset_summary(workspace, "mine")["splits"]["test"]["conversion"] is None


def test_remove_never_deletes_a_folder(workspace: Path, cohort: Path) -> None:
    demo = workspace / "datasets" / "demo"
    shutil.copytree(cohort, demo, symlinks=True)  # what demo-data leaves: a real folder
    with pytest.raises(DatasetError, match="is a folder, not a registered link"):
        remove_dataset(workspace, "demo")
    assert (demo / "train.csv").is_file()
    assert dataset_summary(workspace, "demo")["splits"]["train"]["series"] == 9


def test_stage_parameters_take_a_dataset_name_or_a_path(cli, workspace: Path, cohort: Path, tmp_path: Path) -> None:
    cli("datasets", "add", "mine", str(cohort))
    by_name = json.loads(cli("run", "--stage", "convert", "--set", "dataset=mine", "--dry-run", "--json").stdout)
    by_path = json.loads(cli("run", "--stage", "convert", "--set", f"dataset={cohort}", "--dry-run", "--json").stdout)
    assert [s["stage"] for s in by_name["steps"]] == ["convert"]  # no demo-data for a registered dataset
    assert [s["stage"] for s in by_path["steps"]] == ["convert"]
    roi = json.loads(cli("run", "--stage", "roi", "--set", "dataset=mine", "--dry-run", "--json").stdout)
    assert {s["params"].get("dataset") for s in roi["steps"] if "dataset" in s["params"]} == {"mine"}
    # the same name pointing at other data is another input: the fingerprint changes
    other = Path(shutil.copytree(cohort, tmp_path / "other", symlinks=True))
    cli("datasets", "remove", "mine")
    cli("datasets", "add", "mine", str(other))
    again = json.loads(cli("run", "--stage", "convert", "--set", "dataset=mine", "--dry-run", "--json").stdout)
    assert again["steps"][0]["fingerprint"] != by_name["steps"][0]["fingerprint"]
