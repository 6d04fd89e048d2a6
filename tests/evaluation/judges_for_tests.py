"""Judges used by the evaluation and iterate tests (imported by name, as users' judges are)."""

from __future__ import annotations


def shorter_is_better(prompt: str, response: str) -> float:
    """Reward: minus the number of characters."""
    return -float(len(response))


def always_first(prompt: str, a: str, b: str) -> float:
    """Pairwise judge with a pure position bias."""
    return 0


def wants_marker(prompt: str, a: str, b: str, marker: str = "POLICY") -> float:
    """Pairwise: the response containing `marker` wins."""
    return 0 if marker in a and marker not in b else 1 if marker in b and marker not in a else 0.5


def broken(prompt: str, response: str) -> float:
    raise RuntimeError("judge server down")


def not_a_number(prompt: str, response: str) -> str:
    return "good"


def too_many(prompt: str, a: str, b: str, c: str) -> float:
    return 0.0


def even_length(prompt: str, response: str) -> float:
    """Reward: 1.0 for a response of an even number of characters (about half of random ones), else 0.0."""
    return 1.0 if len(response) % 2 == 0 else 0.0
