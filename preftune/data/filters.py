"""Filters over normalized pairs; each returns what it kept and how many it removed, for the log."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .records import PreferencePair, UnpairedExample, as_text

Example = PreferencePair | UnpairedExample


@dataclass(frozen=True)
class FilterSettings:
    """Which filters run. `min_confidence` drops pairs whose agreement or score margin is below it. Built from the
    config's `data.filters` (`DataConfig.load_settings`), which holds the defaults."""

    drop_near_identical: bool
    drop_duplicates: bool
    min_confidence: float | None
    max_prompt_chars: int | None
    max_response_chars: int | None
    exclude_from: tuple[str, ...] = ()
    exclude_flags: tuple[str, ...] | None = None  # None: DOCTOR_EXCLUDED
    exclude_suspect_above: float | None = None


# the data doctor's flags that mark a pair to leave out by default (nearly identical responses are not among them:
# minimal-edit pairs, such as gsm8k_small_edit's, are built that way)
DOCTOR_EXCLUDED = ("exact_duplicate", "near_duplicate", "identical_responses", "empty_response", "leaked", "likely_mislabeled")


def squash(text: str) -> str:
    """The text with runs of whitespace made one space, in lower case: what "the same text" means to the filters."""
    return " ".join(text.split()).lower()


def _near_identical(ex: Example) -> bool:
    return isinstance(ex, PreferencePair) and squash(as_text(ex.chosen)) == squash(as_text(ex.rejected))


def content_key(ex: Example) -> str:
    """A pair's (or unpaired example's) identity by content: the hash of its prompt and responses (or completion and label)."""
    if isinstance(ex, PreferencePair):
        parts = [as_text(ex.prompt), as_text(ex.chosen), as_text(ex.rejected)]
    else:
        parts = [as_text(ex.prompt), as_text(ex.completion), str(ex.label)]
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()


def apply_filters(examples: Sequence[Example], settings: FilterSettings) -> tuple[list[Example], dict[str, int]]:
    """Run the enabled filters in order; returns the kept examples and removed counts by reason."""
    removed: dict[str, int] = {}
    kept = list(examples)

    def run(reason: str, drop: Callable[[Example], bool]) -> None:
        nonlocal kept
        before = len(kept)
        kept = [ex for ex in kept if not drop(ex)]
        if before - len(kept):
            removed[reason] = before - len(kept)

    if settings.drop_near_identical:
        run("chosen and rejected differ only in whitespace or case", _near_identical)
    if settings.drop_duplicates:
        seen: set[str] = set()

        def duplicate(ex: Example) -> bool:
            k = content_key(ex)
            if k in seen:
                return True
            seen.add(k)
            return False

        run("duplicate pair", duplicate)
    if settings.min_confidence is not None:
        threshold = settings.min_confidence
        run(f"confidence below {threshold}", lambda ex: isinstance(ex, PreferencePair) and ex.confidence is not None and ex.confidence < threshold)
    if settings.max_prompt_chars is not None:
        limit = settings.max_prompt_chars
        run(f"prompt over {limit} characters", lambda ex: len(as_text(ex.prompt)) > limit)
    if settings.max_response_chars is not None:
        limit = settings.max_response_chars

        def long_response(ex: Example) -> bool:
            texts = [ex.chosen, ex.rejected] if isinstance(ex, PreferencePair) else [ex.completion]
            return any(len(as_text(t)) > limit for t in texts)

        run(f"response over {limit} characters", long_response)
    if settings.exclude_from:
        flags = DOCTOR_EXCLUDED if settings.exclude_flags is None else settings.exclude_flags
        excluded = excluded_keys(settings.exclude_from, flags, settings.exclude_suspect_above)
        run(f"marked to exclude in {', '.join(settings.exclude_from)}", lambda ex: content_key(ex) in excluded)
    return kept, removed


def excluded_keys(paths: Sequence[str], flags: Sequence[str] = DOCTOR_EXCLUDED, suspect_above: float | None = None) -> set[str]:
    """The content keys of the pairs that doctor.jsonl files (`preftune data doctor`) flag with one of `flags`, or whose
    `suspect` score exceeds `suspect_above`."""
    import json

    from ..errors import DataError

    keys: set[str] = set()
    wanted = set(flags)
    for path in paths:
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except OSError as e:
            raise DataError(f"data.filters.exclude_from: {path}: cannot read it ({e.strerror}). Fix: run `preftune data doctor` to write it, or fix the path.") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key, rec_flags, suspect = str(rec["key"]), rec["flags"], rec.get("suspect")
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"data.filters.exclude_from: {path}:{n}: not a doctor record (a JSON object with 'key' and 'flags'). "
                                "Fix: give the doctor.jsonl that `preftune data doctor` wrote.") from None
            if wanted & set(rec_flags) or (suspect_above is not None and suspect is not None and suspect > suspect_above):
                keys.add(key)
    return keys
