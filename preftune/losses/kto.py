"""KTO: the unpaired loss, with the batch KL estimate as reference point."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KTOOutput:
    """Per-example losses (B,), implicit rewards β·(log πθ − log πref) (B,), and the KL reference point used."""

    losses: torch.Tensor
    rewards: torch.Tensor
    kl: torch.Tensor


def kto_loss(policy_logps: torch.Tensor, reference_logps: torch.Tensor, labels: torch.Tensor,
             policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> KTOOutput:
    """Kahneman-Tversky Optimization (Ethayarajh et al. 2024, eq. 8).

    Args:
        policy_logps, reference_logps: (B,) summed response log-probs of each example's completion.
        labels: (B,) bool, True for desirable completions.
        policy_kl_logps, reference_kl_logps: (B,) log-probs of mismatched (prompt, completion) pairs from the
            same batch; their mean log-ratio, clamped at 0 and detached, is the reference point z₀.
        beta: β. desirable_weight, undesirable_weight: λ_D and λ_U.
    Returns:
        `KTOOutput`: λ_D·(1 − σ(β(r − z₀))) for desirable and λ_U·(1 − σ(β(z₀ − r))) for undesirable examples.
    """
    kl = (policy_kl_logps - reference_kl_logps).mean().clamp(min=0).detach()
    logratios = policy_logps - reference_logps
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios)))
    losses = torch.where(labels.bool(), desirable, undesirable)
    return KTOOutput(losses, (beta * logratios).detach(), kl)
