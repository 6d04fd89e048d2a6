"""Step metrics named as in TRL: rewards/*, logps/*, logits/*; accumulated over micro-batches and ranks."""

from __future__ import annotations

from collections import defaultdict

import torch

from ..losses import LossOutput
from ..models.logprobs import SequenceLogps


def pair_metrics(out: LossOutput, policy: SequenceLogps, b: int) -> dict[str, torch.Tensor]:
    """Per-pair values (each (B,)) whose means are the logged metrics. Accuracy counts ties as 0.5."""
    cr, rr = out.chosen_rewards.float(), out.rejected_rewards.float()
    acc = (cr > rr).float() + 0.5 * (cr == rr).float()
    return {"rewards/chosen": cr, "rewards/rejected": rr, "rewards/margins": cr - rr, "rewards/accuracies": acc,
            "logps/chosen": policy.chosen(b).detach().float(), "logps/rejected": policy.rejected(b).detach().float(),
            "logits/chosen": policy.mean_logits[:b].float(), "logits/rejected": policy.mean_logits[b:].float(),
            "loss": out.losses.detach().float()}


def drift_values(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor) -> torch.Tensor:
    """Per-pair mean |log πθ − log πref| of the two responses, in nats: how far the policy has moved on this data."""
    return 0.5 * (chosen_logratios.abs() + rejected_logratios.abs()).float()


class MetricAccumulator:
    """Sums per-pair values across micro-batches; `reduce` gathers across processes and returns means."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        self.count = 0
        self.per_pair: dict[str, list[torch.Tensor]] = defaultdict(list)

    def add(self, values: dict[str, torch.Tensor], keep: tuple[str, ...] = ()) -> None:
        n = 0
        for k, v in values.items():
            self.sums[k] = self.sums[k] + v.detach().double().sum().cpu()
            n = v.numel()
            if k in keep:
                self.per_pair[k].append(v.detach().cpu())
        self.count += n

    def reduce(self, gather) -> dict[str, float]:
        """Means over every pair seen by every process; `gather` is accelerate's gather (identity on one process)."""
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        vec = torch.stack([self.sums[k] for k in keys] + [torch.tensor(float(self.count), dtype=torch.float64)])
        total = gather(vec.unsqueeze(0)).sum(0) if gather else vec
        n = total[-1].item()
        return {k: (total[i] / n).item() for i, k in enumerate(keys)}
