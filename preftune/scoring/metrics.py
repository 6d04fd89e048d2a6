"""Step metrics named as in TRL: rewards/*, logps/*, logits/*; accumulated over micro-batches and ranks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from ..losses import LossOutput
from ..models.logprobs import SequenceLogps


PAIR_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
                "logits/chosen", "logits/rejected", "logratios/chosen", "logratios/rejected", "drift/abs_logratio")
"""What a pair loss logs each step (TRL's names; log-ratios and drift only with a reference), besides grad_norm and learning_rate."""
KTO_METRICS = ("loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected",
               "logits/chosen", "logits/rejected", "logratios/chosen", "logratios/rejected")
"""What KTO logs each step (TRL's KTOTrainer names: chosen = desirable, rejected = undesirable)."""


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


SUM = "sum/"


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


class MetricAccumulator:
    """Sums per-pair values (means) and counts (totals) across micro-batches on the values' device; `reduce` gathers
    across processes and brings everything to the host in one transfer, so a step waits on the accelerator once."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.totals: dict[str, torch.Tensor] = {}
        self.count = 0
        self.per_pair: dict[str, list[torch.Tensor]] = defaultdict(list)

    @staticmethod
    def _add(into: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
        s = value.detach().to(_sum_dtype(value.device)).sum()
        into[key] = into[key] + s if key in into else s

    def add(self, values: dict[str, torch.Tensor], keep: tuple[str, ...] = ()) -> None:
        """Add one micro-batch's per-pair values (each (B,)); keeps the values of `keep` per pair (on their device).
        Values named `sum/...` are totals (token counts, say), reported as their sum rather than their mean."""
        n = 0
        for k, v in values.items():
            if k.startswith(SUM):
                self.add_total(k, v)
                continue
            self._add(self.sums, k, v)
            n = v.numel()
            if k in keep:
                self.per_pair[k].append(v.detach())
        self.count += n

    def add_total(self, key: str, value: torch.Tensor) -> None:
        """Add to a count reported as its sum over micro-batches and processes (e.g. tokens), not as a mean."""
        self._add(self.totals, key, value)

    def reduce(self, gather: Callable[[torch.Tensor], torch.Tensor] | None, count_key: str | None = None) -> dict[str, float]:
        """Means of the per-pair values and sums of the totals over every process, plus the number of pairs as
        `count_key` when named; `gather` is accelerate's gather (None on one process)."""
        if not self.sums:
            return {}
        keys, tkeys = sorted(self.sums), sorted(self.totals)
        first = next(iter(self.sums.values()))
        parts = [self.sums[k] for k in keys] + [self.totals[k].to(first.device, first.dtype) for k in tkeys]
        vec = torch.stack(parts + [torch.tensor(float(self.count), dtype=first.dtype, device=first.device)])
        total = (gather(vec.unsqueeze(0)).sum(0) if gather else vec).cpu().tolist()  # the one device-to-host transfer
        n = total[-1]
        means = {k: total[i] / n for i, k in enumerate(keys)}
        means |= {k: total[len(keys) + j] for j, k in enumerate(tkeys)}
        return means | ({count_key: n} if count_key else {})
