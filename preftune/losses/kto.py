"""KTO: the unpaired loss, with the batch KL estimate as reference point."""

from __future__ import annotations

from dataclasses import dataclass

import torch

NAME = "kto"
DESCRIPTION = "KTO: unpaired desirable/undesirable examples against the batch KL reference point"
PAPER = "Ethayarajh et al. 2024, KTO: Model Alignment as Prospect Theoretic Optimization, eq. 8"
PARAMS: dict[str, float] = {"desirable_weight": 1.0, "undesirable_weight": 1.0}  # λ_D, λ_U: TRL's KTOConfig defaults
DOMAINS = {"desirable_weight": "(0, inf)", "undesirable_weight": "(0, inf)"}
DEFAULT_BETA = 0.1
FORMULA = ("λ_D (1 − σ(β (r − z₀))) for a desirable example, λ_U (1 − σ(β (z₀ − r))) for an undesirable one; r = log πθ(y|x) − log πref(y|x), "
           "z₀ = max(0, mean log-ratio of the batch's mismatched prompt/completion pairs), detached")


@dataclass(frozen=True)
class KTOOutput:
    """Per-example losses (B,), implicit rewards β·(log πθ − log πref) (B,), and the KL reference point used."""

    losses: torch.Tensor
    rewards: torch.Tensor
    kl: torch.Tensor


def kto_loss(policy_logps: torch.Tensor, reference_logps: torch.Tensor, labels: torch.Tensor,
             policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor, beta: float = DEFAULT_BETA,
             desirable_weight: float = PARAMS["desirable_weight"], undesirable_weight: float = PARAMS["undesirable_weight"],
             kl: torch.Tensor | None = None) -> KTOOutput:
    """Kahneman-Tversky Optimization (Ethayarajh et al. 2024, eq. 8).

    Args:
        policy_logps, reference_logps: (B,) summed response log-probs of each example's completion.
        labels: (B,) bool, True for desirable completions.
        policy_kl_logps, reference_kl_logps: (B,) log-probs of mismatched (prompt, completion) pairs from the
            same batch; their mean log-ratio, clamped at 0 and detached, is the reference point z₀.
        beta: β. desirable_weight, undesirable_weight: λ_D and λ_U.
        kl: z₀ itself, when it is known already (e.g. averaged over processes); the KL log-probs are then unused.
    Returns:
        `KTOOutput`: λ_D·(1 − σ(β(r − z₀))) for desirable and λ_U·(1 − σ(β(z₀ − r))) for undesirable examples.
    """
    if kl is None:
        kl = kto_reference_point(policy_kl_logps, reference_kl_logps)
    logratios = policy_logps - reference_logps
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios)))
    losses = torch.where(labels.bool(), desirable, undesirable)
    return KTOOutput(losses, (beta * logratios).detach(), kl)


def kto_reference_point(policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor) -> torch.Tensor:
    """z₀: the mean log-ratio of the mismatched pairs, clamped at 0, detached (a scalar)."""
    return (policy_kl_logps - reference_kl_logps).detach().mean().clamp(min=0)
