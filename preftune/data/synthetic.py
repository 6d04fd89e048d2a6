"""Preference data preftune builds itself, so the quickstart needs nothing downloaded: arithmetic with near misses."""

from __future__ import annotations

import random
from typing import Any

OPERATIONS = ("+", "-")


def arithmetic_question(a: int, op: str, b: int) -> str:
    return f"What is {a} {op} {b}?"


def arithmetic_answer(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def arithmetic_records(n: int, seed: int = 0, conversational: bool = True) -> list[dict[str, Any]]:
    """`n` distinct questions "What is A op B?" with the right answer chosen and a near miss (off by 1, 2 or 10) rejected."""
    rng = random.Random(seed)
    seen: set[tuple[int, str, int]] = set()
    records: list[dict[str, Any]] = []
    while len(records) < n:
        a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice(OPERATIONS)
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        right = arithmetic_answer(a, op, b)
        wrong = right + rng.choice([-10, -2, -1, 1, 2, 10])
        question = arithmetic_question(a, op, b)
        chosen, rejected = f"{a} {op} {b} = {right}", f"{a} {op} {b} = {wrong}"
        rec: dict[str, Any]
        if conversational:
            rec = {"prompt": [{"role": "user", "content": question}],
                   "chosen": [{"role": "assistant", "content": chosen}],
                   "rejected": [{"role": "assistant", "content": rejected}]}
        else:
            rec = {"prompt": question, "chosen": chosen, "rejected": rejected}
        rec["id"] = f"arith-{seed}-{len(records)}"
        records.append(rec)
    return records


def arithmetic_questions(n: int, seed: int = 0, exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """`n` distinct questions "What is A op B?" (A, B in 10..99), none of them in `exclude`."""
    rng = random.Random(seed)
    out: list[str] = []
    seen = set(exclude)
    if n > 2 * 90 * 90 - len(seen):
        raise ValueError(f"only {2 * 90 * 90} distinct arithmetic questions exist; asked for {n} beyond {len(seen)} excluded")
    while len(out) < n:
        q = arithmetic_question(rng.randint(10, 99), rng.choice(OPERATIONS), rng.randint(10, 99))
        if q not in seen:
            seen.add(q)
            out.append(q)
    return out
