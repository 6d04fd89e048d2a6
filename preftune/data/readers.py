"""Read raw records from JSONL, JSON, Parquet, CSV, a `save_to_disk` folder or a Hugging Face dataset name."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .problems import Problem, ProblemLog

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass(frozen=True)
class RawRecord:
    """A record as read, with the place it came from (for error messages)."""

    data: dict[str, Any]
    source: str
    line: int
    unit: str = "line"


@dataclass(frozen=True)
class InMemoryRecords:
    """Records handed over from Python: a list of dicts or a `datasets.Dataset`. Problems name the record's index."""

    rows: Sequence[Any]
    name: str = "train_data"

    def __str__(self) -> str:
        return f"{self.name} ({len(self.rows)} records)"

    def records(self, log: ProblemLog) -> list[RawRecord]:
        out = []
        for i, row in enumerate(self.rows):
            if not isinstance(row, Mapping):
                log.add(Problem("not an object", self.name, i, None, f"a {type(row).__name__}", "pass one dict per record", "record"))
                continue
            out.append(RawRecord(dict(row), self.name, i, "record"))
        if not out and not log.problems:
            raise DataError(f"{self.name}: no records. Fix: pass a non-empty list of dicts or a datasets.Dataset.")
        return out


def read_records(spec: str, log: ProblemLog, split: str | None = None) -> list[RawRecord]:
    """Read every record of one source; unreadable records go to `log`, unreadable sources raise `DataError`."""
    path = Path(spec)
    if path.is_dir():
        return list(_read_saved_dataset(path, split))
    if path.suffix.lower() in FILE_SUFFIXES:
        if not path.exists():
            raise DataError(f"{spec}: file not found. Fix: check data.train / data.eval paths (relative to the working directory).")
        if path.stat().st_size == 0:
            raise DataError(f"{spec}: the file is empty. Fix: point data.train at a file with records.")
        reader = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".csv": _read_csv}
        records = list(reader[path.suffix.lower()](path, log))
        if not records and not log.problems:
            raise DataError(f"{spec}: no records found (blank lines only). Fix: point data.train at a file with records.")
        return records
    if path.exists():
        raise DataError(f"{spec}: unsupported file type '{path.suffix}'. Fix: use one of {', '.join(FILE_SUFFIXES)}, or a save_to_disk folder.")
    if "/" in spec and (spec.startswith(".") or spec.startswith("/")):
        raise DataError(f"{spec}: path not found. Fix: check the path.")
    return list(_read_hub_dataset(spec, split))


def _read_jsonl(path: Path, log: ProblemLog) -> Iterator[RawRecord]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                log.add(Problem("undecodable bytes", str(path), lineno, None, f"byte {raw[e.start:e.start + 1]!r} at column {e.start + 1} is not UTF-8", "re-encode the file as UTF-8"))
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                log.add(Problem("malformed JSON", str(path), lineno, None, f"{e.msg} at column {e.colno}", "make each line one complete JSON object"))
                continue
            if not isinstance(obj, dict):
                log.add(Problem("not an object", str(path), lineno, None, f"a JSON {type(obj).__name__}", "make each line a JSON object such as {\"prompt\": ..., \"chosen\": ..., \"rejected\": ...}"))
                continue
            yield RawRecord(obj, str(path), lineno)


def _read_json(path: Path, log: ProblemLog) -> Iterator[RawRecord]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: undecodable bytes at byte offset {e.start}. Fix: re-encode the file as UTF-8.") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON: {e.msg} at column {e.colno}. Fix: the file must hold one JSON list of records (use .jsonl for one record a line).") from None
    if isinstance(obj, dict) and len(obj) == 1 and isinstance(next(iter(obj.values())), list):
        obj = next(iter(obj.values()))
    if not isinstance(obj, list):
        raise DataError(f"{path}: found a JSON {type(obj).__name__} at the top level. Fix: the file must hold a JSON list of records.")
    for i, item in enumerate(obj, start=1):
        if not isinstance(item, dict):
            log.add(Problem("not an object", str(path), i, None, f"a JSON {type(item).__name__}", "make each list item a JSON object", unit="row"))
            continue
        yield RawRecord(item, str(path), i, "row")


def _read_parquet(path: Path, log: ProblemLog) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({e}). Fix: rewrite it with pandas/pyarrow, or convert to JSONL.") from None
    for i, row in enumerate(table.to_pylist(), start=1):
        yield RawRecord(row, str(path), i, "row")


def _read_csv(path: Path, log: ProblemLog) -> Iterator[RawRecord]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: undecodable bytes at byte offset {e.start}. Fix: re-encode the file as UTF-8.") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        yield RawRecord({k: v for k, v in row.items() if k is not None}, str(path), reader.line_num)


def _read_saved_dataset(path: Path, split: str | None) -> Iterator[RawRecord]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: a folder, but not one written by datasets.save_to_disk. Fix: point at the folder save_to_disk wrote, or at a file.") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = _pick_split(ds, split, str(path))
    for i, row in enumerate(ds, start=1):
        yield RawRecord(dict(row), str(path), i, "row")


def _read_hub_dataset(name: str, split: str | None) -> Iterator[RawRecord]:
    """A dataset name on the Hugging Face hub (network needed; tests use local files only)."""
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # the hub client raises many types; the user needs the name and the reason
        raise DataError(f"{name}: not a local file or folder, and loading it as a Hugging Face dataset failed ({type(e).__name__}: {e}). Fix: check the path, or the dataset name and data.split.") from None
    for i, row in enumerate(ds, start=1):
        yield RawRecord(dict(row), f"{name}[{split or 'train'}]", i, "row")


def _pick_split(ds: Any, split: str | None, where: str) -> Any:
    if split is None:
        if len(ds) == 1:
            return next(iter(ds.values()))
        split = "train"
    if split not in ds:
        raise DataError(f"{where}: no split '{split}'. Fix: set data.split to one of {sorted(ds)}.")
    return ds[split]
