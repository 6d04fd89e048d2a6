"""Detect a record's format (TRL's names) and normalize it into a `PreferencePair` or `UnpairedExample`."""

from __future__ import annotations

import math
from typing import Any, Literal

from .problems import Problem
from .readers import RawRecord
from .records import Message, PreferencePair, Text, UnpairedExample

Format = Literal["standard", "implicit_prompt", "conversational", "conversational_implicit_prompt", "unpaired", "prompt_completion", "messages",
                 "text"]
FORMATS: tuple[str, ...] = ("standard", "implicit_prompt", "conversational", "conversational_implicit_prompt", "unpaired", "prompt_completion",
                            "messages", "text")
SFT_FORMATS: tuple[str, ...] = ("prompt_completion", "messages", "text")  # TRL's SFT formats: one desirable completion each
DEFAULT_TURN_BOUNDARY = "\n\nAssistant:"


class RecordError(Exception):
    """Internal: one record is invalid; carries the problem (turned into a `Problem` by the caller)."""

    def __init__(self, kind: str, field: str | None, found: str, fix: str):
        super().__init__(found)
        self.kind, self.field, self.found, self.fix = kind, field, found, fix

    def at(self, rec: RawRecord) -> Problem:
        return Problem(self.kind, rec.source, rec.line, self.field, self.found, self.fix, rec.unit)


def detect_format(data: dict[str, Any]) -> Format | None:
    """The format of one record by its keys and value types, or None when it matches none."""
    if "completion" in data and "label" in data:
        return "unpaired"
    if "chosen" not in data or "rejected" not in data:
        if "prompt" in data and "completion" in data:
            return "prompt_completion"
        if "messages" in data:
            return "messages"
        if "text" in data:
            return "text"
        return None
    conversational = isinstance(data["chosen"], list)
    if "prompt" in data:
        return "conversational" if conversational else "standard"
    return "conversational_implicit_prompt" if conversational else "implicit_prompt"


def normalize(rec: RawRecord, fmt: Format, turn_boundary: str = DEFAULT_TURN_BOUNDARY) -> PreferencePair | UnpairedExample:
    """Validate one record of the given format and return its normalized form; raises `RecordError`."""
    data = rec.data
    if fmt == "unpaired":
        return _unpaired(data, f"{rec.source}:{rec.line}")
    if fmt in SFT_FORMATS:
        return _sft(data, fmt, f"{rec.source}:{rec.line}")
    conversational = fmt.startswith("conversational")
    needed = ("chosen", "rejected") + (("prompt",) if fmt in ("standard", "conversational") else ())
    for name in needed:
        if name not in data:
            raise RecordError("missing field", name, f"keys are {sorted(data)}", f"add '{name}' (format detected: {fmt}), or map a column to it in data.columns")
    chosen = _text(data["chosen"], "chosen", conversational)
    rejected = _text(data["rejected"], "rejected", conversational)
    if fmt == "standard":
        prompt = _text(data["prompt"], "prompt", False, allow_empty=True)
    elif fmt == "conversational":
        prompt = _text(data["prompt"], "prompt", True)
    elif fmt == "implicit_prompt":
        prompt, chosen, rejected = split_implicit_prompt(chosen, rejected, turn_boundary)
    else:
        prompt, chosen, rejected = split_implicit_conversation(chosen, rejected)
    if chosen == rejected:
        raise RecordError("chosen identical to rejected", "rejected", "the two responses are the same text", "remove the pair: it carries no preference")
    extra = _optional(data)
    return PreferencePair(prompt, chosen, rejected, source=f"{rec.source}:{rec.line}", **extra)


def split_implicit_prompt(chosen: str, rejected: str, boundary: str = DEFAULT_TURN_BOUNDARY) -> tuple[str, str, str]:
    """Split two whole dialogues into (prompt, chosen, rejected): the prompt is their shared prefix up to and
    including the last `boundary` (a turn marker) inside it."""
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    cut = chosen.rfind(boundary, 0, n)
    if cut < 0:
        found = "no shared prefix" if n == 0 else f"the shared prefix ({n} characters) holds no turn boundary {boundary!r}"
        raise RecordError("no shared prefix", "chosen", found, "give an explicit 'prompt' field, or set data.turn_boundary to the marker that starts the response")
    end = cut + len(boundary)
    prompt, c, r = chosen[:end], chosen[end:], rejected[end:]
    if not c.strip() or not r.strip():
        raise RecordError("empty text", "chosen" if not c.strip() else "rejected", "the response after the shared prompt is empty", "remove the pair or fix the response")
    return prompt, c, r


def split_implicit_conversation(chosen: list[Message], rejected: list[Message]) -> tuple[list[Message], list[Message], list[Message]]:
    """Split two whole conversations into (prompt, chosen, rejected) at their longest common message prefix."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise RecordError("no shared prefix", "chosen", "the conversations share no first message", "give an explicit 'prompt' list of messages")
    if n == len(chosen) or n == len(rejected):
        raise RecordError("empty text", "chosen", "one conversation holds nothing after the shared prompt", "remove the pair or fix the conversation")
    return chosen[:n], chosen[n:], rejected[n:]


def _unpaired(data: dict[str, Any], where: str) -> UnpairedExample:
    for name in ("prompt", "completion", "label"):
        if name not in data:
            raise RecordError("missing field", name, f"keys are {sorted(data)}", f"add '{name}' (format detected: unpaired)")
    conversational = isinstance(data["completion"], list)
    prompt = _text(data["prompt"], "prompt", conversational, allow_empty=not conversational)
    completion = _text(data["completion"], "completion", conversational)
    label = _bool(data["label"])
    extra = _optional(data)
    extra.pop("score_chosen", None)
    extra.pop("score_rejected", None)
    extra.pop("confidence", None)
    return UnpairedExample(prompt, completion, label, source=where, **extra)


def _sft(data: dict[str, Any], fmt: str, where: str) -> UnpairedExample:
    """A TRL SFT record as a desirable completion: prompt/completion, a `messages` conversation (the last message, an
    assistant's, is the completion), or plain `text` (all of it is the completion)."""
    needed = {"prompt_completion": ("prompt", "completion"), "messages": ("messages",), "text": ("text",)}[fmt]
    for name in needed:
        if name not in data:
            raise RecordError("missing field", name, f"keys are {sorted(data)}", f"add '{name}' (format detected: {fmt})")
    extra = {k: v for k, v in _optional(data).items() if k in ("id", "weight")}
    if fmt == "text":
        return UnpairedExample("", _text(data["text"], "text", False), True, source=where, **extra)
    if fmt == "messages":
        messages = _text(data["messages"], "messages", True)
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            raise RecordError("no completion", "messages", f"the last message is from {messages[-1]['role']!r}" if len(messages) > 1 else "a single message",
                              "end each conversation with the assistant's reply (the completion trained on), after at least one other message")
        return UnpairedExample(messages[:-1], [messages[-1]], True, source=where, **extra)
    conversational = isinstance(data["completion"], list)
    prompt = _text(data["prompt"], "prompt", conversational, allow_empty=not conversational)
    return UnpairedExample(prompt, _text(data["completion"], "completion", conversational), True, source=where, **extra)


def _text(value: Any, field: str, conversational: bool, allow_empty: bool = False) -> Text:
    if conversational:
        if not isinstance(value, list):
            raise RecordError("wrong type", field, f"a {type(value).__name__} where the other fields are message lists", f"make '{field}' a list of {{role, content}} messages like the rest")
        if not value:
            raise RecordError("empty text", field, "an empty message list", f"give '{field}' at least one message")
        for i, m in enumerate(value):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise RecordError("wrong type", f"{field}[{i}]", f"{_short(m)}", "each message must be an object with string 'role' and 'content'")
        if not any(m["content"].strip() for m in value):
            raise RecordError("empty text", field, "all messages are empty", "remove the pair or fill in the text")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    if not isinstance(value, str):
        raise RecordError("wrong type", field, f"a {type(value).__name__} ({_short(value)})", f"make '{field}' a string (or make every text field a message list)")
    if not allow_empty and not value.strip():
        raise RecordError("empty text", field, "an empty string", "remove the record or fill in the text")
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise RecordError("wrong type", "label", f"{_short(value)}", "make 'label' true (desirable) or false (undesirable)")


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise RecordError("wrong type", field, f"a bool ({value})", f"make '{field}' a number")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value)
        except ValueError:
            raise RecordError("wrong type", field, f"the string {_short(value)}", f"make '{field}' a number") from None
    else:
        raise RecordError("wrong type", field, f"a {type(value).__name__}", f"make '{field}' a number")
    if not math.isfinite(out):
        raise RecordError("wrong type", field, f"{out}", f"make '{field}' a finite number")
    return out


def _optional(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if data.get("id") is not None:
        out["id"] = str(data["id"])
    for name in ("score_chosen", "score_rejected", "confidence"):
        if data.get(name) not in (None, ""):
            out[name] = _number(data[name], name)
    if data.get("weight") not in (None, ""):
        w = _number(data["weight"], "weight")
        if w < 0:
            raise RecordError("wrong type", "weight", f"{w}", "make 'weight' zero or positive")
        out["weight"] = w
    if "confidence" not in out and "score_chosen" in out and "score_rejected" in out:
        out["confidence"] = out["score_chosen"] - out["score_rejected"]
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
