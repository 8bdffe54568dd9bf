"""Custom data that fits no folder layout, listed in one manifest file (anomalib issue #1259, UniAD issue #16).

A manifest is a csv file with a header row, or a json list of objects, with the fields
``image`` (required), ``split`` (train | test | validation, also ``val``), ``label`` (see :data:`NORMAL_LABELS` and
:data:`ANOMALOUS_LABELS`), ``mask`` (optional: the defect mask of an anomalous test image) and ``category``
(optional: without the column every row is in ``default_category``). Relative paths are relative to the
manifest's folder. Rows are checked as they are read and every faulty row is named (row number, column) in one
error; images and masks are then checked by :meth:`IndexedSource.validate`, whose problems name their rows too.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adzoo.data.datamodule import AnomalyDataModule, DataSource
from adzoo.data.mvtec import MAX_LISTED_PROBLEMS, DataError, IndexedSource, RecordDataset, SampleRecord
from adzoo.data.real_iad import cached_dataset
from adzoo.data.types import select_categories

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("image", "split", "label")
OPTIONAL_COLUMNS = ("mask", "category")
SPLITS = {"train": "train", "test": "test", "validation": "validation", "val": "validation"}
#: label spellings, compared after stripping and lower-casing (json may also give the integers 0 and 1)
NORMAL_LABELS = ("0", "normal", "good", "ok")
ANOMALOUS_LABELS = ("1", "anomaly", "anomalous", "abnormal", "bad", "defect", "ng")
DEFAULT_CATEGORY = "default"


class _RowError(Exception):
    """One faulty field of one row; collected, then raised together as a DataError."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class _Row:
    """One manifest row as read: its number (1 = first data row) and where that is in the file."""

    number: int
    where: str
    fields: dict[str, Any]


def _csv_rows(path: Path) -> tuple[list[str], list[_Row]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: spreadsheets write a BOM
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        rows = []
        for number, fields in enumerate(reader, start=1):
            if None in fields:  # more cells than the header has names: reported as the column ''
                fields[""] = ",".join(fields.pop(None))  # type: ignore[call-overload]
            rows.append(_Row(number, f"row {number} (line {reader.line_num})", fields))
    return columns, rows


def _json_rows(path: Path) -> tuple[list[str], list[_Row]]:
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise DataError(
            f"manifest {path}: expected a json list of objects (one per image), got {type(entries).__name__}"
        )
    columns: dict[str, None] = {}
    rows = []
    for number, entry in enumerate(entries, start=1):
        where = f"row {number} (entry [{number - 1}])"
        if not isinstance(entry, dict):
            raise DataError(f"manifest {path}: {where} must be an object with keys {', '.join(REQUIRED_COLUMNS)}")
        columns.update(dict.fromkeys(entry))
        rows.append(_Row(number, where, entry))
    return list(columns), rows


def _text(fields: dict[str, Any], column: str, required: bool) -> str | None:
    """A field as stripped text; None when absent or empty (refused when ``required``)."""
    value = fields.get(column)
    if isinstance(value, bool) or not (value is None or isinstance(value, (str, int))):
        raise _RowError(column, f"expected text, got {value!r}")
    text = "" if value is None else str(value).strip()
    if not text:
        if required:
            raise _RowError(column, "is empty")
        return None
    return text


class ManifestSource(IndexedSource):
    """Indexes the images a manifest file lists (csv or json), per category, with the same checks and errors as
    the folder layouts; a category's pixel metrics need a mask for every anomalous test image, as in
    :class:`~adzoo.data.mvtec.MVTecLayoutSource`."""

    def __init__(
        self,
        file: str | os.PathLike | None,
        categories: Sequence[str] | str = "all",
        default_category: str = DEFAULT_CATEGORY,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if file in (None, ""):
            raise DataError(
                "data.file is not set (expected a manifest: a .csv with the columns image, split, label"
                "[, mask, category], or a .json list of such objects), e.g. data.file=/data/list.csv"
            )
        self.file = Path(file).expanduser().absolute()  # type: ignore[arg-type]
        if not self.file.is_file():
            raise DataError(f"manifest {self.file} does not exist (expected a .csv or .json file); set data.file")
        self.default_category = default_category
        self.cache_dir = cache_dir
        self._row_of: dict[str, str] = {}  # image or mask path -> "row N" of the manifest
        records = self._read()
        available = sorted({r.category for r, _ in records})
        self._start_index(
            self.file.parent, select_categories(categories, available, f"manifest {self.file}", DataError)
        )
        grouped: dict[tuple[str, str], list[SampleRecord]] = {}
        for record, split in records:
            grouped.setdefault((record.category, split), []).append(record)
        for category in self._categories:
            self._train[category] = grouped[category, "train"]
            self._test[category] = self._pixel_rule(category, grouped[category, "test"])
            if (category, "validation") in grouped:
                self._val[category] = grouped[category, "validation"]

    def _read(self) -> list[tuple[SampleRecord, str]]:
        suffix = self.file.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise DataError(f"manifest {self.file}: unknown format {suffix!r} (expected a .csv or .json file)")
        try:
            columns, rows = (_csv_rows if suffix == ".csv" else _json_rows)(self.file)
        except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read manifest {self.file}: {exc}") from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        if missing or unknown:
            raise DataError(
                f"manifest {self.file}: " + "; ".join(
                    ([f"missing column(s) {', '.join(missing)}"] if missing else [])
                    + ([f"unknown column(s) {', '.join(map(repr, unknown))}"] if unknown else [])
                ) + f" (expected {', '.join(REQUIRED_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)})"
            )  # fmt: skip
        if not rows:
            raise DataError(f"manifest {self.file} lists no images (expected one row per image)")
        problems: list[str] = []
        records: list[tuple[SampleRecord, str]] = []
        first_row: dict[str, str] = {}
        for row in rows:
            try:
                record, split = self._record(row, "category" in columns)
            except _RowError as exc:
                problems.append(f"{row.where}, column '{exc.column}': {exc}")
                continue
            key = str(Path(record.path).resolve())
            if key in first_row:
                problems.append(f"{row.where}, column 'image': {record.path} is listed again (first in "
                                f"{first_row[key]}); each image must appear once, in one split")  # fmt: skip
                continue
            first_row[key] = row.where
            self._row_of[record.path] = row.where
            if record.mask_path:
                self._row_of[record.mask_path] = row.where
            records.append((record, split))
        if not problems:
            problems = self._empty_categories(records)
        if problems:
            listed = "\n".join(f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS])
            rest = len(problems) - MAX_LISTED_PROBLEMS
            more = f"\n  ... and {rest} more" if rest > 0 else ""
            raise DataError(f"manifest {self.file} has {len(problems)} problem(s) (fix them all, then run again):"
                            f"\n{listed}{more}")  # fmt: skip
        return records

    def _file(self, value: str, column: str) -> str:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else self.file.parent / path
        if not path.is_file():
            raise _RowError(column, f"file not found: {path}")
        return str(path)

    def _record(self, row: _Row, has_category: bool) -> tuple[SampleRecord, str]:
        fields = row.fields
        if "" in fields:
            raise _RowError("", f"more cells than the header names (extra: {fields['']})")
        split_text = _text(fields, "split", required=True)
        split = SPLITS.get(split_text.lower())  # type: ignore[union-attr]
        if split is None:
            raise _RowError("split", f"unknown split {split_text!r} (expected train, test, validation or val)")
        label_text = _text(fields, "label", required=True).lower()  # type: ignore[union-attr]
        if label_text not in NORMAL_LABELS + ANOMALOUS_LABELS:
            raise _RowError("label", f"{label_text!r} is not a label (expected one of {', '.join(NORMAL_LABELS)} "
                                     f"for normal or {', '.join(ANOMALOUS_LABELS)} for anomalous)")  # fmt: skip
        label = int(label_text in ANOMALOUS_LABELS)
        if label and split != "test":
            raise _RowError(
                "label",
                f"an anomalous image in the {split} split (train and validation images must be "
                "normal; validation anomalies are made synthetically, data.val_anomalies)",
            )
        category = self.default_category
        if has_category:
            category = _text(fields, "category", required=True)  # type: ignore[assignment]
            if category in (".", "..") or "/" in category or "\\" in category:
                raise _RowError("category", f"{category!r} is not a folder name (per-category results go there)")
        image = self._file(_text(fields, "image", required=True), "image")  # type: ignore[arg-type]
        mask_text = _text(fields, "mask", required=False)
        mask = None
        if mask_text is not None:
            if not label:
                raise _RowError("mask", "a mask on a normal row (only anomalous test images have masks)")
            mask = self._file(mask_text, "mask")
        record = SampleRecord(image, category, label, mask, False, "anomaly" if label else "good")
        return record, split

    @staticmethod
    def _empty_categories(records: list[tuple[SampleRecord, str]]) -> list[str]:
        present = {(r.category, split) for r, split in records}
        return [
            f"empty category {category!r}: no {split} rows"
            for category in sorted({c for c, _ in present})
            for split in ("train", "test")
            if (category, split) not in present
        ]

    def _pixel_rule(self, category: str, test: list[SampleRecord]) -> list[SampleRecord]:
        """Masks count only when every anomalous test image of the category has one (MVTecLayoutSource's rule):
        a partly masked category would score pixel metrics on some of its anomalies only."""
        anomalous = [r for r in test if r.label == 1]
        masked = sum(r.mask_path is not None for r in anomalous)
        pixel_labels = bool(anomalous) and masked == len(anomalous)
        if not anomalous:
            log.warning("category %s has no anomalous test image in %s: nothing to detect", category, self.file)
        elif not pixel_labels:
            unmasked = [self._row_of[r.path] for r in anomalous if r.mask_path is None][:3]
            ignored = f"; the {masked} masks given are not used" if masked else ""
            log.warning("category %s has masks for %d of %d anomalous test images (none in %s): pixel metrics will "
                        "be skipped%s", category, masked, len(anomalous), ", ".join(unmasked), ignored)  # fmt: skip
        return [
            SampleRecord(r.path, r.category, r.label, r.mask_path if pixel_labels else None, pixel_labels, r.defect)
            for r in test
        ]

    def _problems(self, category: str, include_test: bool = True) -> list[str]:
        """The base check's problems, each followed by the manifest row it came from."""
        problems = super()._problems(category, include_test)
        paths = [p for r in self._records(category, include_test) for p in (r.path, r.mask_path) if p]
        for i, problem in enumerate(problems[:MAX_LISTED_PROBLEMS]):
            named = [p for p in paths if p in problem]
            if named:
                problems[i] = f"{problem} (manifest {self.file}, {self._row_of[max(named, key=len)]})"
        return problems

    def train_dataset(self, categories: Sequence[str], image_size: int) -> RecordDataset:
        return cached_dataset([r for c in categories for r in self._train[c]], image_size, self.cache_dir, "train")

    def test_dataset(self, categories: Sequence[str], image_size: int) -> RecordDataset:
        return cached_dataset([r for c in categories for r in self._test[c]], image_size, self.cache_dir, "test")

    def val_dataset(self, categories: Sequence[str], image_size: int) -> RecordDataset | None:
        records = [r for c in categories for r in self._val.get(c, [])]
        return cached_dataset(records, image_size, self.cache_dir, "validation") if records else None


class ManifestDataModule(AnomalyDataModule):
    """``data=manifest``: the usual datamodule, taking ``data.file`` (the manifest its source reads) as well, so a
    manifest is named by ``data.file=list.csv`` as a folder is by ``data.root``."""

    def __init__(self, source: DataSource, file: str | None = None, **kwargs: Any) -> None:
        super().__init__(source, **kwargs)
        self.file = file
