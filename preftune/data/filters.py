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


def _squash(text: str) -> str:
    return " ".join(text.split()).lower()


def _near_identical(ex: Example) -> bool:
    return isinstance(ex, PreferencePair) and _squash(as_text(ex.chosen)) == _squash(as_text(ex.rejected))


def _key(ex: Example) -> str:
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
            k = _key(ex)
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
    return kept, removed
