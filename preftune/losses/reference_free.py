"""Reference-free preference losses: no reference model; the implicit reward is the policy's own (averaged) log-prob."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pairwise import smoothed_sigmoid
from .registry import register
from .types import LossOutput, PairLogps


def simpo(x: PairLogps, beta: float, gamma_beta_ratio: float, label_smoothing: float) -> LossOutput:
    rw = beta * x.policy_chosen / x.chosen_lengths
    rl = beta * x.policy_rejected / x.rejected_lengths
    losses = smoothed_sigmoid(rw - rl - gamma_beta_ratio * beta, label_smoothing)
    return LossOutput(losses, rw.detach(), rl.detach())

register("simpo", "SimPO: −log σ(β·(avg log πθ(y_w) − avg log πθ(y_l)) − γ), γ = gamma_beta_ratio·β; no reference.",
         "Meng et al. 2024, SimPO: Simple Preference Optimization with a Reference-Free Reward, eq. 6",
         {"gamma_beta_ratio": 0.5, "label_smoothing": 0.0}, uses_reference=False, default_beta=2.0,
         domains={"gamma_beta_ratio": "[0, inf)", "label_smoothing": "[0, 0.5]"}, formula="−(1−ε) log σ(β (avg_w − avg_l) − γ) − ε log σ(−β (avg_w − avg_l) + γ), γ = gamma_beta_ratio · β", reward="avg_logp")(simpo)


def log_odds(avg_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 − p)) of the per-token average probability p = exp(avg log p), stable for avg log p < 0."""
    return avg_logp - torch.log(-torch.expm1(avg_logp))


def orpo(x: PairLogps, beta: float, lambda_: float) -> LossOutput:
    avg_w = x.policy_chosen / x.chosen_lengths
    avg_l = x.policy_rejected / x.rejected_lengths
    ratio = F.logsigmoid(log_odds(avg_w) - log_odds(avg_l))
    losses = -avg_w - lambda_ * ratio
    return LossOutput(losses, (beta * avg_w).detach(), (beta * avg_l).detach())

register("orpo", "ORPO: NLL(chosen) − λ·log σ(log odds(y_w) − log odds(y_l)), odds of per-token average probabilities; no reference.",
         "Hong et al. 2024, ORPO: Monolithic Preference Optimization without Reference Model, eq. 6-7",
         {"lambda_": 0.1}, uses_reference=False, domains={"lambda_": "[0, inf)"}, formula="−avg_w − λ log σ(log odds(avg_w) − log odds(avg_l)), odds(a) = eᵃ / (1 − eᵃ)", reward="avg_logp")(orpo)

