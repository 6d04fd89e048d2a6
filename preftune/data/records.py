"""The normalized records every later stage works on: a preference pair, or an unpaired example (KTO)."""

from __future__ import annotations

from dataclasses import dataclass
Message = dict[str, str]
Text = str | list[Message]


@dataclass(frozen=True)
class PreferencePair:
    """A prompt with a preferred (chosen) and a dispreferred (rejected) response.

    `prompt`, `chosen` and `rejected` are all strings (standard format) or all message lists
    (conversational). `confidence` is annotator agreement in [0, 1] or a score margin, when known.
    """

    prompt: Text
    chosen: Text
    rejected: Text
    source: str = ""
    id: str | None = None
    score_chosen: float | None = None
    score_rejected: float | None = None
    weight: float = 1.0
    confidence: float | None = None

    @property
    def conversational(self) -> bool:
        return isinstance(self.chosen, list)


@dataclass(frozen=True)
class UnpairedExample:
    """A prompt with one completion labelled desirable (True) or undesirable (False), for KTO."""

    prompt: Text
    completion: Text
    label: bool
    source: str = ""
    id: str | None = None
    weight: float = 1.0

    @property
    def conversational(self) -> bool:
        return isinstance(self.completion, list)


def as_text(value: Text) -> str:
    """A flat string view of a text or message list (for lengths, hashing and display)."""
    if isinstance(value, str):
        return value
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in value)

