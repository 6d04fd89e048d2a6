"""Held-out preference metrics from per-pair log-probs: accuracy of the implicit reward, margins, log-ratios, and the
same split by length difference (does the model simply prefer the longer answer?)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..train.diagnostics import correlation

# a pair's responses count as "similar length" when they differ by at most this share of the longer one
SIMILAR_LENGTH = 0.1


@dataclass(frozen=True)
class PairScores:
    """Per-pair summed log-probs (policy, and reference when there is one) and response lengths in tokens."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor | None
    reference_rejected: torch.Tensor | None
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor


def _accuracy(margins: torch.Tensor) -> float:
    return ((margins > 0).double() + 0.5 * (margins == 0).double()).mean().item() if margins.numel() else float("nan")


def preference_summary(s: PairScores, beta: float) -> dict[str, object]:
    """TRL-named held-out metrics (`rewards/accuracies` counts ties as 0.5) plus `by_length` and length-bias measures.

    With a reference, reward = β·(log π − log πref); without, reward = β·log π (the model's own likelihood)."""
    pc, pr = s.policy_chosen.double(), s.policy_rejected.double()
    lc, lr = s.chosen_lengths.double(), s.rejected_lengths.double()
    has_ref = s.reference_chosen is not None and s.reference_rejected is not None
    ratio_c = pc - s.reference_chosen.double() if has_ref else pc
    ratio_r = pr - s.reference_rejected.double() if has_ref else pr
    rc, rr = beta * ratio_c, beta * ratio_r
    margins = rc - rr
    out: dict[str, object] = {
        "pairs": int(pc.numel()),
        "rewards/accuracies": _accuracy(margins),
        "rewards/margins": margins.mean().item(),
        "rewards/chosen": rc.mean().item(),
        "rewards/rejected": rr.mean().item(),
        "logps/chosen": pc.mean().item(),
        "logps/rejected": pr.mean().item(),
        "accuracy_per_token": _accuracy(pc / lc.clamp(min=1) - pr / lr.clamp(min=1)),
        "lengths/chosen": lc.mean().item(),
        "lengths/rejected": lr.mean().item(),
    }
    if has_ref:
        out["logratios/chosen"] = ratio_c.mean().item()
        out["logratios/rejected"] = ratio_r.mean().item()
    diff = lc - lr
    out["margin_length_correlation"] = correlation(margins.tolist(), diff.tolist())
    differ = diff != 0
    prefers_longer = ((margins > 0) == (diff > 0)).double() * (margins != 0).double() + 0.5 * (margins == 0).double()
    out["prefers_longer"] = prefers_longer[differ].mean().item() if differ.any() else float("nan")
    similar = diff.abs() <= SIMILAR_LENGTH * torch.maximum(lc, lr)
    groups = {"chosen_longer": (diff > 0) & ~similar, "similar_length": similar, "chosen_shorter": (diff < 0) & ~similar}
    out["by_length"] = {name: {"pairs": int(m.sum().item()), "rewards/accuracies": _accuracy(margins[m]),
                               "rewards/margins": margins[m].mean().item() if m.any() else float("nan")} for name, m in groups.items()}
    return out
