"""Prompts for on-policy rounds: built-in arithmetic questions, or the `prompt` field of a JSONL / JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.records import Text
from ..data.synthetic import arithmetic_questions
from ..errors import DataError

BUILTIN_ARITHMETIC = "builtin:arithmetic"


def _as_prompt(value: object, where: str) -> Text:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
        return value  # type: ignore[return-value]
    raise DataError(f"{where}: field 'prompt' must be a non-empty string or a list of messages with 'role' and 'content'. Fix that record.")


def read_prompts(path: str) -> list[Text]:
    """Every record's `prompt` from a .jsonl file (one object per line) or a .json list of objects."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: prompts file not found. Fix: check iterate.prompts / iterate.eval_prompts.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text. Fix: save it as UTF-8.") from None
    rows: list[tuple[str, object]] = []
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}). Fix the file.") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of objects with a 'prompt' field.")
        rows = [(f"{path}: item {i}", r) for i, r in enumerate(data)]
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((f"{path}:{n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: malformed JSON ({e.msg}). Fix that line.") from None
    prompts = []
    for where, rec in rows:
        if not isinstance(rec, dict) or "prompt" not in rec:
            raise DataError(f"{where}: no 'prompt' field. Fix: each record needs a prompt (string or messages).")
        prompts.append(_as_prompt(rec["prompt"], where))
    if not prompts:
        raise DataError(f"{path}: no prompts. Fix: add records with a 'prompt' field.")
    return prompts


def _as_chat(questions: list[str]) -> list[Text]:
    return [[{"role": "user", "content": q}] for q in questions]


def round_prompts(spec: str, n_train: int, n_eval: int, eval_spec: str | None, seed: int) -> tuple[list[Text], list[Text]]:
    """(prompts to sample on, held-out prompts). Built-in arithmetic draws questions as chat messages (held-out ones
    disjoint from built-in training ones); a file without `eval_spec` gives its last `n_eval` prompts to evaluation."""
    builtin = spec == BUILTIN_ARITHMETIC
    train_q = arithmetic_questions(n_train, seed) if builtin else []
    train = _as_chat(train_q) if builtin else read_prompts(spec)
    if eval_spec is not None and eval_spec != BUILTIN_ARITHMETIC:
        return train, read_prompts(eval_spec)[:n_eval]
    if builtin or eval_spec == BUILTIN_ARITHMETIC:
        return train, _as_chat(arithmetic_questions(n_eval, seed + 1, exclude=set(train_q)))
    if len(train) < 2:
        raise DataError(f"{spec}: {len(train)} prompt(s); at least 2 are needed to hold some out. Fix: add prompts or set iterate.eval_prompts.")
    k = min(n_eval, len(train) // 2)
    return train[:-k], train[-k:]
