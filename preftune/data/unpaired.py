"""Unpaired examples for KTO: preference pairs split into desirable and undesirable completions, and the mismatched
(prompt, completion) pairs whose log-ratios estimate the KL reference point."""

from __future__ import annotations

from collections.abc import Sequence

from .filters import Example
from .records import PreferencePair, UnpairedExample
from .tokenize import TokenizedPair


def split_pairs(examples: Sequence[Example]) -> list[UnpairedExample]:
    """Every pair as a desirable (chosen) and an undesirable (rejected) example; unpaired examples as they are.

    Pairs are split two at a time as [chosen a, chosen b, rejected a, rejected b] (TRL's unpairing puts the chosen
    responses of a whole block before its rejected ones): a batch then holds both labels, and no completion sits next
    to another of the same prompt, so each KL pair (`kl_pairs`) is mismatched.
    """
    out: list[UnpairedExample] = []
    group: list[PreferencePair] = []

    def flush() -> None:
        out.extend(UnpairedExample(p.prompt, p.chosen, True, p.source, p.id, p.weight) for p in group)
        out.extend(UnpairedExample(p.prompt, p.rejected, False, p.source, p.id, p.weight) for p in group)
        group.clear()

    for ex in examples:
        if isinstance(ex, PreferencePair):
            group.append(ex)
            if len(group) == 2:
                flush()
        else:
            flush()
            out.append(ex)
    flush()
    return out


def kl_partners(prompts: Sequence[Sequence[int]], batch_size: int) -> list[int]:
    """For each example, the example whose completion it is paired with to estimate the KL term: within consecutive
    chunks of `batch_size` (the batches KTO trains on), the previous one (cyclically; TRL's rotation by one), or
    further back when the previous one has the same prompt."""
    partners: list[int] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(range(start, min(start + batch_size, len(prompts))))
        n = len(chunk)
        for k, i in enumerate(chunk):
            back = (chunk[(k - d) % n] for d in range(1, n))
            partners.append(next((j for j in back if list(prompts[j]) != list(prompts[i])), chunk[(k - 1) % n]))
    return partners


def kl_pairs(pairs: Sequence[TokenizedPair], batch_size: int, max_length: int | None) -> list[TokenizedPair]:
    """Each tokenized example (its completion in `chosen`, `rejected` empty) with its KL partner's completion in
    `rejected`, cut to fit `max_length` after the prompt: a batch then scores the matched and the mismatched sequences
    in one pass, in any layout (the prompt is shared by both)."""
    partners = kl_partners([p.prompt for p in pairs], batch_size)
    out = []
    for p, j in zip(pairs, partners):
        kl = pairs[j].chosen
        if max_length is not None:
            kl = kl[:max(1, max_length - len(p.prompt))]
        out.append(TokenizedPair(p.prompt, p.chosen, list(kl), p.weight))
    return out


def weight_advice(labels: Sequence[bool], desirable_weight: float, undesirable_weight: float) -> str | None:
    """The KTO paper's advice (eq. 8) when desirable and undesirable counts differ: λ_D·n_D / (λ_U·n_U) within
    [1, 4/3]; a message with the ranges for either weight when neither is in range (TRL's check), else None."""
    n_d = max(sum(1 for x in labels if x), 1)
    n_u = max(len(labels) - n_d, 1)
    if n_d == n_u:
        return None
    d_lo, d_hi = round(n_u * undesirable_weight / n_d, 2), round(n_u * undesirable_weight / n_d * 1.33, 2)
    u_lo, u_hi = round(n_d * desirable_weight / n_u / 1.33, 2), round(n_d * desirable_weight / n_u, 2)
    if d_lo <= desirable_weight <= d_hi or u_lo <= undesirable_weight <= u_hi:
        return None
    return (f"{n_d} desirable and {n_u} undesirable examples with loss.params desirable_weight={desirable_weight}, "
            f"undesirable_weight={undesirable_weight}: the KTO paper recommends EITHER desirable_weight in [{d_lo}, {d_hi}] "
            f"OR undesirable_weight in [{u_lo}, {u_hi}].")
