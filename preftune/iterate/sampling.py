"""Adaptive K: sample K responses per prompt, judge them, and sample K more for the prompts that have nothing to learn
from yet (their samples tie, or none is correct), up to a cap per prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Judged:
    """One sampled response with its judge score and length in tokens (`finished`: it ended with EOS)."""

    text: str
    score: float
    tokens: int
    finished: bool


@dataclass
class AdaptiveSamples:
    """Every prompt's judged samples, in the order drawn, and how the sampling went."""

    per_prompt: list[list[Judged]]
    draws: int = 0
    resampled_prompts: int = 0  # prompts sampled more than once
    settled_by_resampling: int = 0  # of those, prompts that found something to learn in a later draw
    draw_sizes: list[int] = field(default_factory=list)  # prompts sampled in each draw

    def stats(self) -> dict[str, int | list[int]]:
        return {"draws": self.draws, "samples": sum(len(p) for p in self.per_prompt), "resampled_prompts": self.resampled_prompts,
                "settled_by_resampling": self.settled_by_resampling, "prompts_per_draw": self.draw_sizes}


# draw(prompt positions, samples per prompt, draw number) -> (prompt position, text, tokens, finished) per sample
Draw = Callable[[list[int], int, int], Sequence[tuple[int, str, int, bool]]]


def adaptive_sample(n_prompts: int, k: int, cap: int, draw: Draw, score: Callable[[int, list[str]], list[float]],
                    settled: Callable[[Sequence[float], Sequence[str]], bool]) -> AdaptiveSamples:
    """Draw `k` samples for every prompt, then `k` more (fewer at the cap) for each prompt not `settled` by its samples so
    far, until every prompt is settled or has `cap` samples. `score(prompt position, all its texts)` scores a prompt's
    samples together after each draw (a pairwise judge's round-robin counts change as samples arrive)."""
    if not 1 <= k <= cap:
        raise ValueError(f"adaptive sampling needs 1 ≤ k ≤ cap, got k={k}, cap={cap}")
    out = AdaptiveSamples([[] for _ in range(n_prompts)])
    pending = list(range(n_prompts))
    while pending:
        have = len(out.per_prompt[pending[0]])  # every pending prompt has been in every draw so far
        n = min(k, cap - have)
        for i, text, tokens, finished in draw(pending, n, out.draws):
            out.per_prompt[i].append(Judged(text, float("nan"), tokens, finished))
        for i in pending:
            got = out.per_prompt[i]
            out.per_prompt[i] = [Judged(s.text, v, s.tokens, s.finished) for s, v in zip(got, score(i, [s.text for s in got]), strict=True)]
        out.draw_sizes.append(len(pending))
        out.draws += 1
        if out.draws == 2:
            out.resampled_prompts = len(pending)
        still = [i for i in pending if not settled([s.score for s in out.per_prompt[i]], [s.text for s in out.per_prompt[i]])]
        if out.draws >= 2:
            out.settled_by_resampling += len(pending) - len(still)
        pending = [i for i in still if len(out.per_prompt[i]) < cap]
    return out
