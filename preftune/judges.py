"""Judges that need no network, for `preftune eval` and `preftune iterate` (`judge.name: preftune.judges:<function>`).

Reward judges take (prompt, response) and return a float; pairwise judges take (prompt, a, b) and return 0 when `a` is
better, 1 when `b` is, 0.5 for a tie. Keyword arguments come from `judge.args`. Write your own the same way (docs/eval.md).
"""

from __future__ import annotations

import re

_EXPR = re.compile(r"(-?\d+)\s*([+\-*×x])\s*(-?\d+)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def arithmetic_answer(prompt: str) -> int | None:
    """The value of the last `A op B` in the prompt (op: + - * × x), or None when there is none."""
    found = _EXPR.findall(prompt.replace(",", ""))
    if not found:
        return None
    a, op, b = found[-1]
    x, y = int(a), int(b)
    return x + y if op == "+" else x - y if op == "-" else x * y


def answer_distance(prompt: str, response: str) -> float | None:
    """|last number in the response − value of the prompt's `A op B`|; None when either is missing."""
    answer = arithmetic_answer(prompt)
    numbers = _NUMBER.findall(response.replace(",", ""))
    if answer is None or not numbers:
        return None
    return abs(float(numbers[-1]) - answer)


def arithmetic_exact_match(prompt: str, response: str) -> float:
    """1.0 when the last number in the response equals the value of the prompt's `A op B`, else 0.0."""
    return 1.0 if answer_distance(prompt, response) == 0 else 0.0


def arithmetic_graded(prompt: str, response: str, scale: float = 10.0) -> float:
    """Partial credit: 1.0 for the right value (as exact match), else 0.5·scale / (scale + |last number − answer|), which is
    below 0.5 and falls with the distance; 0.0 when the response has no number or the prompt no `A op B`. Ranks near
    misses above far ones, so fewer prompts' samples tie."""
    if not scale > 0:
        raise ValueError(f"arithmetic_graded: scale must be > 0, not {scale!r} (judge.args.scale)")
    distance = answer_distance(prompt, response)
    if distance is None:
        return 0.0
    return 1.0 if distance == 0 else 0.5 * scale / (scale + distance)


def word_limit(prompt: str, response: str, max_words: int = 50) -> float:
    """1.0 when the response has at most `max_words` words, else 0.0."""
    return 1.0 if len(response.split()) <= max_words else 0.0


def keywords(prompt: str, response: str, words: list[str] | tuple[str, ...] = (), mode: str = "all", case_sensitive: bool = False) -> float:
    """Keyword presence: with mode "all" the share of `words` found in the response; with "any" 1.0 if one is, else 0.0."""
    if not words:
        raise ValueError("keywords judge needs judge.args.words, e.g. {words: [sorry, cannot]}")
    text = response if case_sensitive else response.lower()
    found = [w in text if case_sensitive else w.lower() in text for w in words]
    if mode == "any":
        return 1.0 if any(found) else 0.0
    if mode != "all":
        raise ValueError(f"keywords judge: mode must be 'all' or 'any', not {mode!r}")
    return sum(found) / len(found)


def prefer_shorter(prompt: str, a: str, b: str) -> float:
    """Pairwise: the response with fewer words wins (0: a, 1: b, 0.5: same count)."""
    na, nb = len(a.split()), len(b.split())
    return 0.0 if na < nb else 1.0 if nb < na else 0.5
