"""Held-out preference metrics from the per-pair values of the losses' scoring path (`preftune.scoring`): accuracy of
the implicit reward, margins, log-ratios, and the same split by length difference (does the model simply prefer the
longer answer?)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..stats import correlation

# a pair's responses count as "similar length" when they differ by at most this share of the longer one
SIMILAR_LENGTH = 0.1


def _accuracy(margins: torch.Tensor) -> float:
    return ((margins > 0).double() + 0.5 * (margins == 0).double()).mean().item() if margins.numel() else float("nan")


def preference_summary(values: Mapping[str, torch.Tensor], chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor) -> dict[str, object]:
    """TRL-named held-out metrics (`rewards/accuracies` counts ties as 0.5) plus `by_length` and length-bias measures.

    `values` are per-pair values from `loss_on_batch` (rewards as the run's loss defines them: β·(log π − log πref) for
    DPO; with no reference, β·log π, the model's own likelihood), each (B,), with the response lengths in tokens."""
    margins = values["rewards/margins"].double()
    pc, pr = values["logps/chosen"].double(), values["logps/rejected"].double()
    lc, lr = chosen_lengths.double(), rejected_lengths.double()
    out: dict[str, object] = {
        "pairs": int(margins.numel()),
        "rewards/accuracies": values["rewards/accuracies"].double().mean().item(),
        "rewards/margins": margins.mean().item(),
        "rewards/chosen": values["rewards/chosen"].double().mean().item(),
        "rewards/rejected": values["rewards/rejected"].double().mean().item(),
        "logps/chosen": pc.mean().item(),
        "logps/rejected": pr.mean().item(),
        "accuracy_per_token": _accuracy(pc / lc.clamp(min=1) - pr / lr.clamp(min=1)),
        "lengths/chosen": lc.mean().item(),
        "lengths/rejected": lr.mean().item(),
    }
    if "ref_logps/chosen" in values:
        out["logratios/chosen"] = (pc - values["ref_logps/chosen"].double()).mean().item()
        out["logratios/rejected"] = (pr - values["ref_logps/rejected"].double()).mean().item()
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
