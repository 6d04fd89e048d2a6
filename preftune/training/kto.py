"""KTO as a training objective: each batch row pair holds an example's completion (the chosen slot) and a mismatched
completion after the same prompt (the rejected slot, for the KL reference point); metrics carry TRL's KTO names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import LossConfig
from ..data.batch import PreferenceBatch
from ..losses import kto_reference_point, kto_loss, loss_params
from ..models.logprobs import policy_logps
from ..scoring.batches import Reference, weighted_mean

Values = dict[str, torch.Tensor]


@dataclass(frozen=True)
class KTOLoss:
    """KTO's settings, chosen once at set-up: β, λ_D, λ_U, and how the KL estimate is averaged over processes
    (`gather`: accelerate's gather when distributed, as TRL averages it over ranks)."""

    beta: float
    desirable_weight: float
    undesirable_weight: float
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def from_config(cls, cfg: LossConfig, beta: float | None = None, gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> "KTOLoss":
        params = loss_params(cfg.name, cfg.params)
        return cls(cfg.resolved_beta() if beta is None else beta, float(params["desirable_weight"]), float(params["undesirable_weight"]), gather)


def kto_on_batch(model: torch.nn.Module, batch: PreferenceBatch, reference: Reference, loss: KTOLoss, chunk: int) -> tuple[torch.Tensor, Values]:
    """The batch's weighted mean KTO loss (with gradients) and its values: per-example loss and KL, and `sum/` totals
    per label from which `summarize` makes TRL's per-label means."""
    policy = policy_logps(model, batch, chunk)
    b = batch.num_pairs
    ref = reference.logps(batch)
    if ref is None:
        raise ValueError("KTO needs reference log-probs; the run's reference gives none")
    labels = batch.extras["label"]
    kl = kto_reference_point(policy.rejected(b), ref[1])
    if loss.gather is not None:
        kl = loss.gather(kl.reshape(1)).mean().clamp(min=0)
    out = kto_loss(policy.chosen(b), ref[0], labels, policy.rejected(b), ref[1], beta=loss.beta,
                   desirable_weight=loss.desirable_weight, undesirable_weight=loss.undesirable_weight, kl=kl)
    value = weighted_mean(out.losses, batch.weights)
    d, u = labels.float(), (~labels).float()
    tokens = batch.lengths[:b].float()
    logps, rewards, logits = policy.chosen(b).detach().float(), out.rewards.float(), policy.mean_logits[:b].float() * tokens
    logratios = logps - ref[0].detach().float()
    values = {"loss": out.losses.detach().float(), "kl": out.kl.float().expand(b),
              "sum/logratios/chosen": logratios * d, "sum/logratios/rejected": logratios * u,
              "sum/desirable": d, "sum/undesirable": u,
              "sum/rewards/chosen": rewards * d, "sum/rewards/rejected": rewards * u,
              "sum/logps/chosen": logps * d, "sum/logps/rejected": logps * u,
              "sum/logits/chosen": logits * d, "sum/logits/rejected": logits * u,
              "sum/tokens/chosen": tokens * d, "sum/tokens/rejected": tokens * u}
    return value, values


def summarize(metrics: dict[str, float]) -> dict[str, float]:
    """TRL's KTO metrics from the totals: rewards/, logps/ (means per example of each label), logits/ (means per token),
    rewards/margins (desirable minus undesirable mean reward, when the step has both), kl, loss, and the counts."""
    out = {k: v for k, v in metrics.items() if not k.startswith("sum/")}
    n = {"chosen": metrics.get("sum/desirable", 0.0), "rejected": metrics.get("sum/undesirable", 0.0)}
    for side, count in n.items():
        if count > 0:
            out[f"rewards/{side}"] = metrics[f"sum/rewards/{side}"] / count
            out[f"logps/{side}"] = metrics[f"sum/logps/{side}"] / count
            if f"sum/logratios/{side}" in metrics:
                out[f"logratios/{side}"] = metrics[f"sum/logratios/{side}"] / count
            tokens = metrics.get(f"sum/tokens/{side}", 0.0)
            if tokens > 0:
                out[f"logits/{side}"] = metrics[f"sum/logits/{side}"] / tokens
    if n["chosen"] > 0 and n["rejected"] > 0:
        out["rewards/margins"] = out["rewards/chosen"] - out["rewards/rejected"]
    out["num_desirable"], out["num_undesirable"] = n["chosen"], n["rejected"]
    return out
