"""Reader of the Kaggle competition layout (COMPETITION.md), shared by the real data and the demo cohort.

Only ``series/`` is required; a test copy has nothing else. The tables are checked when read, and a
problem is reported as a :class:`KaggleSchemaError` that names the file, the line, the column and
the value, because the person who sees it has to fix a 200 GB download by hand.

Split ``train`` is ``series/`` with ``train.csv`` and ``train_localizers.csv`` beside it; split
``test`` is ``test/series/`` with ``test_truth.csv`` (in ``test/`` or at the root) and, when the
held-out part carries points, ``test_localizers.csv`` (same places). Vessel segmentations are
looked up in ``segmentations/`` (and ``test/segmentations/``), per-series sub-folder or flattened.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.labels import LABEL_COLUMNS, LOCALIZER_COLUMNS, LOCATIONS, MODALITIES, TRAIN_COLUMNS, aneurysm_label

SPLITS = ("train", "test")


class KaggleSchemaError(ValueError):
    """A table or folder of a Kaggle-layout dataset does not have the expected shape."""


@dataclass(frozen=True)
class Localizer:
    """One row of ``train_localizers.csv``: an aneurysm point on one slice (frame) of a series."""

    series_uid: str
    sop_uid: str
    location: str
    x: float  # pixel column
    y: float  # pixel row
    frame: int | None  # frame index of a multi-frame file ('f'), else None
    line: int  # line number in the CSV (header = line 1), for messages

    @property
    def label(self) -> int:
        return aneurysm_label(self.location)


def parse_coordinates(text: str, where: str) -> tuple[float, float, int | None]:
    """``"{'x': 258.3, 'y': 261.4}"`` (optionally with ``'f'``) -> (x, y, frame); never ``eval``."""
    example = "{'x': 258.3, 'y': 261.4} (plus 'f' for a multi-frame file)"
    try:
        value = ast.literal_eval(str(text).strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise KaggleSchemaError(f"{where}: coordinates {text!r} is not a literal like {example}: {exc}") from None
    if not isinstance(value, dict) or not {"x", "y"} <= set(value):
        raise KaggleSchemaError(f"{where}: coordinates {text!r} must be a dict with 'x' and 'y', like {example}")
    unknown = set(value) - {"x", "y", "f"}
    if unknown:
        raise KaggleSchemaError(f"{where}: coordinates {text!r} has unknown keys {sorted(unknown)}; expected {example}")
    try:
        x, y = float(value["x"]), float(value["y"])
    except (TypeError, ValueError):
        raise KaggleSchemaError(f"{where}: coordinates {text!r}: 'x' and 'y' must be numbers") from None
    frame = value.get("f")
    if frame is not None:
        if isinstance(frame, bool) or not float(frame).is_integer() or float(frame) < 0:
            raise KaggleSchemaError(f"{where}: coordinates {text!r}: 'f' must be a frame index >= 0")
        frame = int(frame)
    return x, y, frame


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise KaggleSchemaError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise KaggleSchemaError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} "
            f"(found: {', '.join(table.columns)})"
        )
    return table


@dataclass(frozen=True)
class KaggleDataset:
    """One split of a Kaggle-layout folder."""

    root: Path
    split: str = "train"

    @classmethod
    def open(cls, root: Path | str, split: str = "train") -> "KaggleDataset":
        """The split, checked to have its ``series/`` folder."""
        if split not in SPLITS:
            raise KaggleSchemaError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        dataset = cls(Path(root), split)
        if not dataset.series_dir.is_dir():
            raise KaggleSchemaError(
                f"{dataset.series_dir} does not exist: a Kaggle-layout dataset needs "
                f"{'series/' if split == 'train' else 'test/series/'}<SeriesInstanceUID>/<SOPInstanceUID>.dcm"
            )
        return dataset

    @property
    def series_dir(self) -> Path:
        return self.root / "series" if self.split == "train" else self.root / "test" / "series"

    def series_uids(self) -> list[str]:
        """Folder names under ``series/`` (the SeriesInstanceUIDs), sorted."""
        return sorted(p.name for p in self.series_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def series_files(self, uid: str) -> list[Path]:
        """All regular files of one series folder (any name; sub-folders included), sorted."""
        folder = self.series_dir / uid
        return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))

    def _first(self, *names: str) -> Path | None:
        bases = [self.root] if self.split == "train" else [self.root / "test", self.root]
        for name in names:
            for base in bases:
                if (base / name).is_file():
                    return base / name
        return None

    @property
    def table_path(self) -> Path | None:
        return self._first("train.csv" if self.split == "train" else "test_truth.csv")

    @property
    def localizer_path(self) -> Path | None:
        return self._first("train_localizers.csv" if self.split == "train" else "test_localizers.csv")

    def read_table(self) -> pd.DataFrame | None:
        """``train.csv`` / ``test_truth.csv`` checked (columns, modality, 0/1 labels); None when absent."""
        path = self.table_path
        if path is None:
            return None
        table = _read_csv(path, TRAIN_COLUMNS)
        for index, row in table.iterrows():
            where = f"{path.name} line {index + 2} (series {row['SeriesInstanceUID']})"
            if row["Modality"] not in MODALITIES:
                raise KaggleSchemaError(
                    f"{where}: unknown modality {row['Modality']!r}; expected one of {', '.join(MODALITIES)}"
                )
            for column in LABEL_COLUMNS:
                if row[column].strip() not in ("0", "1"):
                    raise KaggleSchemaError(f"{where}: column {column!r} must be 0 or 1, got {row[column]!r}")
        table[list(LABEL_COLUMNS)] = table[list(LABEL_COLUMNS)].astype(int)
        duplicated = table["SeriesInstanceUID"][table["SeriesInstanceUID"].duplicated()]
        if len(duplicated):
            raise KaggleSchemaError(f"{path.name}: series {duplicated.iloc[0]} appears more than once")
        return table

    def read_localizers(self) -> list[Localizer] | None:
        """The localizer table parsed and checked row by row; None when the split has none."""
        path = self.localizer_path
        if path is None:
            return None
        table = _read_csv(path, LOCALIZER_COLUMNS)
        points = []
        for index, row in table.iterrows():
            line = index + 2
            where = f"{path.name} line {line} (series {row['SeriesInstanceUID']})"
            if row["location"] not in LOCATIONS:
                raise KaggleSchemaError(f"{where}: unknown location {row['location']!r}; expected one of the 13 "
                                        f"location columns of train.csv")
            if not row["SeriesInstanceUID"].strip() or not row["SOPInstanceUID"].strip():
                raise KaggleSchemaError(f"{where}: empty SeriesInstanceUID or SOPInstanceUID")
            x, y, frame = parse_coordinates(row["coordinates"], where)
            points.append(Localizer(row["SeriesInstanceUID"].strip(), row["SOPInstanceUID"].strip(),
                                    row["location"], x, y, frame, line))
        return points

    def localizer_problems(self, points: list[Localizer]) -> list[str]:
        """Points whose series folder or slice file (``<SOPInstanceUID>.dcm``) is absent, one line each."""
        problems = []
        present = set(self.series_uids())
        name = self.localizer_path.name if self.localizer_path else "localizers"
        stems: dict[str, set[str]] = {}
        for point in points:
            if point.series_uid not in present:
                problems.append(f"{name} line {point.line}: series {point.series_uid} has no folder in "
                                f"{self.series_dir}")
                continue
            if point.series_uid not in stems:
                stems[point.series_uid] = {p.stem for p in self.series_files(point.series_uid)}
            if point.sop_uid not in stems[point.series_uid]:
                problems.append(f"{name} line {point.line}: SOPInstanceUID {point.sop_uid} is not a file of "
                                f"series {point.series_uid}")
        return problems

    def check_localizers(self, points: list[Localizer]) -> None:
        """Raise :class:`KaggleSchemaError` listing the points that do not refer to an existing slice."""
        problems = self.localizer_problems(points)
        if problems:
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            raise KaggleSchemaError("; ".join(problems[:10]) + more)

    def segmentation(self, uid: str) -> Path | None:
        """The ``_cowseg`` vessel mask of a series, per-series sub-folder or flattened, .nii or .nii.gz."""
        bases = [self.root / "segmentations"]
        if self.split == "test":
            bases.insert(0, self.root / "test" / "segmentations")
        for base in bases:
            for folder in (base / uid, base):
                for suffix in (".nii", ".nii.gz"):
                    candidate = folder / f"{uid}_cowseg{suffix}"
                    if candidate.is_file():
                        return candidate
        return None
