"""From judged samples to training examples: preference pairs by a selection strategy, or the correct samples for a
rejection-sampling SFT round. Everything here works on scores and response texts only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

from ..evaluation.judging import Judge

Pick = list[tuple[int, int]]  # (chosen position, rejected position) among one prompt's samples


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


def distinct(positions: Sequence[int], texts: Sequence[str]) -> list[int]:
    """`positions` without those whose text already appeared at an earlier position of the list."""
    seen: set[str] = set()
    out = []
    for i in positions:
        if texts[i] not in seen:
            seen.add(texts[i])
            out.append(i)
    return out


def correct_samples(scores: Sequence[float], texts: Sequence[str], correct: float) -> list[int]:
    """Positions of the samples scoring at least `correct`, one per distinct text, in sample order."""
    return distinct([i for i, s in enumerate(scores) if s >= correct], texts)


def pick_best_worst(scores: Sequence[float], texts: Sequence[str], correct: float, max_pairs: int) -> Pick:
    """The best sample against the worst (one pair), unless every score is equal or the two texts are the same."""
    pick = best_and_worst(scores)
    return [pick] if pick is not None and texts[pick[0]] != texts[pick[1]] else []


def pick_correct_incorrect(scores: Sequence[float], texts: Sequence[str], correct: float, max_pairs: int) -> Pick:
    """Every distinct correct sample (score ≥ `correct`) against a distinct incorrect one, the lowest-scored incorrect
    first, spread so each correct and each incorrect sample is used before any is used again; at most `max_pairs`."""
    good = correct_samples(scores, texts, correct)
    bad = distinct(sorted((i for i, s in enumerate(scores) if s < correct), key=lambda i: (scores[i], i)), texts)
    pairs = [(good[i], bad[(i + d) % len(bad)]) for d in range(len(bad)) for i in range(len(good))]
    return pairs[:max_pairs]


PAIR_STRATEGIES: dict[str, Callable[[Sequence[float], Sequence[str], float, int], Pick]] = {
    "best_worst": pick_best_worst, "correct_incorrect": pick_correct_incorrect}


def select_pairs(scores: Sequence[float], texts: Sequence[str], strategies: Sequence[str], correct: float, max_pairs: int) -> tuple[Pick, str | None]:
    """The pairs of the first strategy, in order, that finds any for this prompt, and that strategy's name (None: no pair)."""
    for name in strategies:
        pairs = PAIR_STRATEGIES[name](scores, texts, correct, max_pairs)
        if pairs:
            return pairs, name
    return [], None
