"""From judged samples to preference pairs: the best response against the worst, skipping prompts whose samples tie."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

from ..evaluation.judges import Judge


def sample_scores(judge: Judge, prompt: str, responses: Sequence[str]) -> list[float]:
    """A score per response: the judge's reward, or for a pairwise judge the number of round-robin comparisons won
    (a tie counts half)."""
    if judge.kind == "reward":
        return [judge.reward(prompt, r) for r in responses]
    wins = [0.0] * len(responses)
    for i, j in combinations(range(len(responses)), 2):
        outcome = judge.compare(prompt, responses[i], responses[j])
        wins[i] += 1.0 - outcome
        wins[j] += outcome
    return wins


def best_and_worst(scores: Sequence[float]) -> tuple[int, int] | None:
    """Positions of the first best and the first worst score; None when every score is equal (nothing to learn)."""
    if not scores or max(scores) == min(scores):
        return None
    return max(range(len(scores)), key=lambda i: (scores[i], -i)), min(range(len(scores)), key=lambda i: (scores[i], i))
