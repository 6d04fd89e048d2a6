"""From source specs to validated, filtered examples: read, map, detect the format, normalize, filter."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import DataError
from .filters import Example, FilterSettings, apply_filters
from .formats import Format, RecordError, detect_format, normalize
from .mapping import ColumnMapping, NoMajority, apply_mapping, check_columns
from .problems import OnError, Problem, ProblemLog
from .readers import InMemoryRecords, RawRecord, read_records
from .recipes import RECIPES
from .synthetic import arithmetic_records

logger = logging.getLogger("preftune.data")

BUILTIN_PREFIX = "builtin:"
BUILTINS = ("arithmetic",)
UNREADABLE = ("malformed JSON", "undecodable bytes", "not an object")


@dataclass(frozen=True)
class LoadSettings:
    """How records are read and turned into examples. Built by `DataConfig.load_settings`, the one place of the defaults."""

    split: str | None
    recipe: str | None
    columns: ColumnMapping | None
    format: str
    turn_boundary: str
    on_error: OnError
    filters: FilterSettings
    builtin_size: int
    builtin_seed: int


@dataclass
class LoadedData:
    """Examples ready for tokenization, with what was read, rejected and filtered (for logs and `inspect`)."""

    examples: list[Example]
    format: str
    n_read: int
    errors: dict[str, int]
    removed: dict[str, int]
    problems: list[Problem] = field(default_factory=list)


Sources = str | InMemoryRecords | Sequence[str]


def load_examples(sources: Sources, settings: LoadSettings, require_records: bool = True) -> LoadedData:
    """Read every source (paths, dataset names, builtins or records from Python), apply the recipe or mapping,
    validate, normalize and filter; logs each count. With `require_records` (training), no usable record is an error."""
    specs: list[str | InMemoryRecords] = [sources] if isinstance(sources, (str, InMemoryRecords)) else list(sources)
    if not specs:
        raise DataError("no data sources given. Fix: set data.train to a file, folder or dataset name.")
    log = ProblemLog(settings.on_error)
    raw: list[RawRecord] = []
    for spec in specs:
        raw.extend(_read(spec, settings, log))
    removed: Counter[str] = Counter()
    mapped = _map(raw, settings, log, removed)
    fmt = _format(mapped, settings)
    examples: list[Example] = []
    for rec in mapped:
        found = detect_format(rec.data)
        if found is not None and found != fmt and settings.format == "auto":
            log.add(Problem("mixed formats", rec.source, rec.line, None, f"this record is {found}, the data set is {fmt}", "use one format per data set", rec.unit))
            continue
        try:
            examples.append(normalize(rec, fmt, settings.turn_boundary))  # type: ignore[arg-type]
        except RecordError as e:
            log.add(e.at(rec))
    log.finish()
    kept, filtered = apply_filters(examples, settings.filters)
    removed.update(filtered)
    n_read = len(raw) + sum(1 for p in log.problems if p.kind in UNREADABLE)
    logger.info("data: %s format detected; %d record(s) read, %d kept", fmt, n_read, len(kept))
    for reason, n in removed.items():
        logger.info("data: removed %d record(s): %s", n, reason)
    if not kept and require_records:
        raise DataError(f"{', '.join(map(str, specs))}: no usable records left after validation and filters ({dict(removed)}). Fix: check the data or loosen data.filters.")
    return LoadedData(kept, fmt, n_read, log.counts(), dict(removed), log.problems)


def _read(spec: str | InMemoryRecords, settings: LoadSettings, log: ProblemLog) -> list[RawRecord]:
    if isinstance(spec, InMemoryRecords):
        return spec.records(log)
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):]
        if name not in BUILTINS:
            raise DataError(f"{spec}: unknown built-in data set. Fix: use one of {[BUILTIN_PREFIX + b for b in BUILTINS]}.")
        records = arithmetic_records(settings.builtin_size, settings.builtin_seed)
        return [RawRecord(r, spec, i, "row") for i, r in enumerate(records, start=1)]
    return read_records(spec, log, settings.split)


def _map(raw: list[RawRecord], settings: LoadSettings, log: ProblemLog, removed: Counter[str]) -> list[RawRecord]:
    if settings.recipe is None and settings.columns is None:
        return raw
    if settings.recipe is not None and settings.recipe not in RECIPES:
        raise DataError(f"data.recipe: unknown recipe '{settings.recipe}'. Fix: use one of {sorted(RECIPES)}.")
    recipe = RECIPES.get(settings.recipe) if settings.recipe else None
    mapping = settings.columns or (recipe.mapping if recipe else None)
    transform = recipe.transform if recipe else None
    if raw and mapping is not None:
        check_columns(mapping, raw[0], "data.columns" if settings.columns else f"data.recipe '{settings.recipe}'")
    out: list[RawRecord] = []
    for rec in raw:
        try:
            if transform is not None:
                rec = transform(rec)
            if mapping is not None:
                rec = apply_mapping(rec, mapping)
        except NoMajority:
            removed["no majority among the votes (tie)"] += 1
            continue
        except RecordError as e:
            log.add(e.at(rec))
            continue
        out.append(rec)
    return out


def _format(records: list[RawRecord], settings: LoadSettings) -> Format:
    if settings.format != "auto":
        return settings.format  # type: ignore[return-value]
    for rec in records:
        fmt = detect_format(rec.data)
        if fmt is not None:
            return fmt
    first = records[0] if records else None
    where = f"{first.source}" if first else "the data"
    keys = sorted(first.data) if first else []
    raise DataError(
        f"{where}: cannot detect the format; the first record has keys {keys}. Fix: give 'prompt'/'chosen'/'rejected' "
        "(or 'chosen'/'rejected' whole dialogues, or 'prompt'/'completion'/'label'), or map columns with data.columns / data.recipe."
    )
