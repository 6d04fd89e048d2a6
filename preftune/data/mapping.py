"""Map a foreign schema onto preftune's fields: renamed columns, joined prompt columns, and pairs decided by votes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .formats import RecordError
from .readers import RawRecord


class VoteRule(BaseModel):
    """Two candidate responses and the columns holding votes for them; the majority becomes `chosen`.

    Each vote column holds `a_value` (a wins), `b_value` (b wins) or anything else (tie or abstain).
    The agreement (majority votes / all votes) becomes the pair's `confidence`.
    """

    model_config = ConfigDict(extra="forbid")
    a: str
    b: str
    votes: list[str] = Field(min_length=1)
    a_value: Any = 1
    b_value: Any = 2


class ColumnMapping(BaseModel):
    """Where each preftune field comes from. `prompt` may list several columns, joined by `join` (empty ones skipped)."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | list[str] | None = None
    chosen: str | None = None
    rejected: str | None = None
    completion: str | None = None
    label: str | None = None
    id: str | None = None
    score_chosen: str | None = None
    score_rejected: str | None = None
    weight: str | None = None
    join: str = "\n\n"
    vote: VoteRule | None = None

    def columns(self) -> list[str]:
        """Every source column this mapping reads."""
        cols: list[str] = []
        for name in ("chosen", "rejected", "completion", "label", "id", "score_chosen", "score_rejected", "weight"):
            value = getattr(self, name)
            if value:
                cols.append(value)
        if isinstance(self.prompt, str):
            cols.append(self.prompt)
        elif self.prompt:
            cols.extend(self.prompt)
        if self.vote:
            cols.extend([self.vote.a, self.vote.b, *self.vote.votes])
        return cols


class NoMajority(Exception):
    """Internal: the votes of a record do not pick a side; counted by the loader as a filtered record."""


def check_columns(mapping: ColumnMapping, first: RawRecord, config_key: str) -> None:
    """Fail early, naming the column, when the mapping reads a column the data does not have."""
    missing = [c for c in mapping.columns() if c not in first.data]
    if missing:
        from ..errors import DataError

        raise DataError(
            f"{first.source}: {config_key} names unknown column(s) {missing}; the data has {sorted(first.data)}. "
            f"Fix: correct {config_key} to use those column names."
        )


def apply_mapping(rec: RawRecord, mapping: ColumnMapping) -> RawRecord:
    """The record re-keyed into preftune's field names; raises `RecordError` or `NoMajority`."""
    data = rec.data
    out: dict[str, Any] = {}
    if mapping.prompt is not None:
        cols = [mapping.prompt] if isinstance(mapping.prompt, str) else mapping.prompt
        parts = []
        for c in cols:
            value = data.get(c)
            if value is None:
                continue
            if not isinstance(value, str):
                raise RecordError("wrong type", c, f"a {type(value).__name__}", f"column '{c}' must hold text to be joined into the prompt")
            if value.strip():
                parts.append(value)
        out["prompt"] = mapping.join.join(parts)
    for name in ("chosen", "rejected", "completion", "label", "id", "score_chosen", "score_rejected", "weight"):
        col = getattr(mapping, name)
        if col is not None and col in data:
            out[name] = data[col]
    if mapping.vote is not None:
        out.update(_decide_by_votes(data, mapping.vote))
    return RawRecord(out, rec.source, rec.line, rec.unit)


def _decide_by_votes(data: dict[str, Any], rule: VoteRule) -> dict[str, Any]:
    votes = [data.get(c) for c in rule.votes]
    tally = Counter("a" if _same(v, rule.a_value) else "b" if _same(v, rule.b_value) else "tie" for v in votes)
    if tally["a"] == tally["b"]:
        raise NoMajority()
    winner = "a" if tally["a"] > tally["b"] else "b"
    chosen, rejected = (rule.a, rule.b) if winner == "a" else (rule.b, rule.a)
    return {"chosen": data[chosen], "rejected": data[rejected], "confidence": tally[winner] / len(votes)}


def _same(value: Any, expected: Any) -> bool:
    return value == expected or (value is not None and str(value).strip() == str(expected))
