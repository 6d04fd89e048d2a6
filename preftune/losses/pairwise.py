"""Pairwise preference losses that compare policy to reference (the DPO family).

Each function maps `PairLogps` and β to per-example losses and implicit rewards β·(log πθ − log πref).
Numerics: `logsigmoid` everywhere a log σ appears, so log-ratios of ±1e3 stay finite. Parameter values are checked
once, against each parameter's registered domain, by `compute_loss` / the config. Each function is registered by
a `register(...)(fn)` call after it rather than with decorator syntax: mutation testing (mutmut) skips decorated
functions, and these formulas are what it must reach.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import register
from .types import LossOutput, PairLogps


def ref_rewards(x: PairLogps, beta: float, losses: torch.Tensor) -> LossOutput:
    """Attach the standard implicit rewards β·(log πθ − log πref), detached."""
    return LossOutput(losses, (beta * x.chosen_logratios).detach(), (beta * x.rejected_logratios).detach())


def smoothed_sigmoid(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """−(1−ε)·log σ(z) − ε·log σ(−z): the logistic loss with labels flipped with probability ε."""
    return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def dpo(x: PairLogps, beta: float) -> LossOutput:
    return ref_rewards(x, beta, -F.logsigmoid(beta * x.margin))

register("dpo", "Direct Preference Optimization: −log σ(β·h), h the difference of chosen and rejected log-ratios.",
         "Rafailov et al. 2023, Direct Preference Optimization, eq. 7", formula="−log σ(β h)")(dpo)


def cdpo(x: PairLogps, beta: float, label_smoothing: float) -> LossOutput:
    return ref_rewards(x, beta, smoothed_sigmoid(beta * x.margin, label_smoothing))

register("cdpo", "Conservative DPO: DPO with label smoothing ε (labels assumed flipped with probability ε).",
         "Mitchell 2023, A note on DPO with noisy preferences and relationship to IPO", {"label_smoothing": 0.1}, domains={"label_smoothing": "[0, 0.5]"}, formula="−(1−ε) log σ(β h) − ε log σ(−β h)")(cdpo)


def robust(x: PairLogps, beta: float, label_smoothing: float) -> LossOutput:
    z = beta * x.margin
    losses = (-(1 - label_smoothing) * F.logsigmoid(z) + label_smoothing * F.logsigmoid(-z)) / (1 - 2 * label_smoothing)
    return ref_rewards(x, beta, losses)

register("robust", "Robust DPO: unbiased loss under preference noise rate ε, ε in [0, 0.5).",
         "Chowdhury et al. 2024, Provably Robust DPO, eq. 7", {"label_smoothing": 0.1}, domains={"label_smoothing": "[0, 0.5)"}, formula="[−(1−ε) log σ(β h) + ε log σ(−β h)] / (1 − 2ε)")(robust)


def ipo(x: PairLogps, beta: float, normalize: str) -> LossOutput:
    # normalize is "tokens" or "sum" (its registered domain; compute_loss checks it)
    h = x.chosen_logratios / x.chosen_lengths - x.rejected_logratios / x.rejected_lengths if normalize == "tokens" else x.margin
    return ref_rewards(x, beta, (h - 1 / (2 * beta)) ** 2)

register("ipo", "Identity Preference Optimization: (h − 1/(2β))²; h per-token averaged by default (TRL), or summed (paper).",
         "Azar et al. 2023, A General Theoretical Paradigm to Understand Learning from Human Preferences, eq. 17",
         {"normalize": "tokens"}, domains={"normalize": "tokens|sum"}, formula="(h′ − 1/(2β))², h′ = r_w/ℓ_w − r_l/ℓ_l (normalize: tokens) or h (normalize: sum)")(ipo)


def sigmoid_norm(x: PairLogps, beta: float) -> LossOutput:
    h = x.chosen_logratios / x.chosen_lengths - x.rejected_logratios / x.rejected_lengths
    return ref_rewards(x, beta, -F.logsigmoid(beta * h))

register("sigmoid_norm", "Length-normalized DPO: −log σ(β·(r_w/ℓ_w − r_l/ℓ_l)), each log-ratio averaged over its response tokens (TRL 'sigmoid_norm').",
         "TRL 1.16 DPOTrainer loss_type='sigmoid_norm'; the per-token averaging of Meng et al. 2024 (SimPO) with the reference kept",
         formula="−log σ(β (r_w/ℓ_w − r_l/ℓ_l))")(sigmoid_norm)


def f_score(logratio: torch.Tensor, divergence: str, alpha: float) -> torch.Tensor:
    """f′(πθ/πref) of the f-divergence, from the log-ratio: reverse KL log t, forward KL 1 − 1/t, Jensen-Shannon
    log(2t/(1+t)), α-divergence (t^(α−1) − 1)/(α − 1) (log t at α = 1)."""
    if divergence == "forward_kl":
        return 1 - torch.exp(-logratio)
    if divergence == "js_divergence":
        return math.log(2) + F.logsigmoid(logratio)
    if divergence == "alpha_divergence" and abs(alpha - 1) >= 1e-6:
        return torch.expm1(torch.clamp((alpha - 1) * logratio, max=80.0)) / (alpha - 1)
    return logratio


def f_dpo(x: PairLogps, beta: float, f_divergence_type: str, f_alpha_divergence_coef: float) -> LossOutput:
    scores = f_score(x.chosen_logratios, f_divergence_type, f_alpha_divergence_coef) - f_score(x.rejected_logratios, f_divergence_type, f_alpha_divergence_coef)
    return ref_rewards(x, beta, -F.logsigmoid(beta * scores))

register("f_dpo", "f-DPO: DPO with the reverse KL replaced by another f-divergence: −log σ(β·(f′(t_w) − f′(t_l))), t = πθ/πref "
         "(TRL loss_type='sigmoid' with f_divergence_type).",
         "Wang et al. 2024, Beyond Reverse KL: Generalizing Direct Preference Optimization with Diverse Divergence Constraints, eq. 11",
         {"f_divergence_type": "reverse_kl", "f_alpha_divergence_coef": 0.5},
         domains={"f_divergence_type": "reverse_kl|forward_kl|js_divergence|alpha_divergence", "f_alpha_divergence_coef": "(0, inf)"},
         formula="−log σ(β (f′(t_w) − f′(t_l))), t = e^r; f′ = log t (reverse_kl), 1 − 1/t (forward_kl), log(2t/(1+t)) (js_divergence), "
                 "(t^(α−1) − 1)/(α − 1) (alpha_divergence)")(f_dpo)


def hinge(x: PairLogps, beta: float) -> LossOutput:
    return ref_rewards(x, beta, torch.relu(1 - beta * x.margin))

register("hinge", "SLiC / RSO hinge loss: max(0, 1 − β·h).",
         "Zhao et al. 2023 (SLiC-HF); Liu et al. 2024 (RSO), eq. 7", formula="max(0, 1 − β h)")(hinge)


def dpop(x: PairLogps, beta: float, lambda_: float) -> LossOutput:
    penalty = torch.clamp(x.reference_chosen - x.policy_chosen, min=0)
    return ref_rewards(x, beta, -F.logsigmoid(beta * (x.margin - lambda_ * penalty)))

register("dpop", "DPO-Positive: −log σ(β·(h − λ·max(0, log πref(y_w) − log πθ(y_w)))), so the chosen likelihood cannot fall for free.",
         "Pal et al. 2024, Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive, eq. 3", {"lambda_": 50.0}, domains={"lambda_": "[0, inf)"}, formula="−log σ(β (h − λ max(0, log πref(y_w) − log πθ(y_w))))")(dpop)


def rpo(x: PairLogps, beta: float, alpha: float) -> LossOutput:
    nll = -x.policy_chosen / x.chosen_lengths
    return ref_rewards(x, beta, -F.logsigmoid(beta * x.margin) + alpha * nll)

register("rpo", "DPO plus α·NLL of the chosen response (per-token average), as in iterative RPO.",
         "Pang et al. 2024, Iterative Reasoning Preference Optimization, eq. 1", {"alpha": 1.0}, domains={"alpha": "[0, inf)"}, formula="−log σ(β h) − α avg_w")(rpo)


def sft(x: PairLogps, beta: float) -> LossOutput:
    return ref_rewards(x, beta, -x.policy_chosen / x.chosen_lengths)

register("sft", "Supervised term: NLL of the chosen response, per-token average (for weighted sums with another loss).",
         "Standard maximum likelihood; used as the NLL term of RPO / MPO", formula="−avg_w")(sft)


def bco_pair(x: PairLogps, beta: float) -> LossOutput:
    losses = -F.logsigmoid(beta * x.chosen_logratios) - F.logsigmoid(-beta * x.rejected_logratios)
    return ref_rewards(x, beta, losses)

register("bco_pair", "Binary classifier optimization on pairs: −log σ(β·r_w) − log σ(−β·r_l) (TRL 1.16 form, no running mean).",
         "Jung et al. 2024, Binary Classifier Optimization for LLM Alignment", formula="−log σ(β r_w) − log σ(−β r_l)")(bco_pair)


def exo_pair(x: PairLogps, beta: float, label_smoothing: float) -> LossOutput:
    z = beta * x.margin
    losses = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-label_smoothing)) + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(label_smoothing))
    return ref_rewards(x, beta, losses)

register("exo_pair", "Efficient exact optimization (EXO-pref), reverse KL to label-smoothed preferences with ε.",
         "Ji et al. 2024, Towards Efficient Exact Optimization of Language Model Alignment, eq. 16", {"label_smoothing": 1e-3}, domains={"label_smoothing": "(0, 1)"}, formula="σ(βh) (log σ(βh) − log(1−ε)) + σ(−βh) (log σ(−βh) − log ε)")(exo_pair)


def nca_pair(x: PairLogps, beta: float) -> LossOutput:
    rw, rl = beta * x.chosen_logratios, beta * x.rejected_logratios
    return ref_rewards(x, beta, -F.logsigmoid(rw) - 0.5 * F.logsigmoid(-rw) - 0.5 * F.logsigmoid(-rl))

register("nca_pair", "Noise contrastive alignment on pairs: −log σ(r_w) − ½log σ(−r_w) − ½log σ(−r_l).",
         "Chen et al. 2024, Noise Contrastive Alignment of Language Models with Explicit Rewards, eq. 11", formula="−log σ(β r_w) − ½ log σ(−β r_w) − ½ log σ(−β r_l)")(nca_pair)


def sppo_hard(x: PairLogps, beta: float) -> LossOutput:
    losses = (x.chosen_logratios - 0.5 / beta) ** 2 + (x.rejected_logratios + 0.5 / beta) ** 2
    return ref_rewards(x, beta, losses)

register("sppo_hard", "Self-play preference optimization, hard labels: (log-ratio_w − 1/(2β))² + (log-ratio_l + 1/(2β))².",
         "Wu et al. 2024, Self-Play Preference Optimization for Language Model Alignment, eq. 4.7", formula="(r_w − 1/(2β))² + (r_l + 1/(2β))²")(sppo_hard)


def apo_zero(x: PairLogps, beta: float) -> LossOutput:
    losses = 1 - torch.sigmoid(beta * x.chosen_logratios) + torch.sigmoid(beta * x.rejected_logratios)
    return ref_rewards(x, beta, losses)

register("apo_zero", "Anchored preference optimization (zero): raise chosen, lower rejected likelihood.",
         "D'Oosterlinck et al. 2024, Anchored Preference Optimization and Contrastive Revisions, eq. 7", formula="1 − σ(β r_w) + σ(β r_l)")(apo_zero)


def apo_down(x: PairLogps, beta: float) -> LossOutput:
    losses = torch.sigmoid(beta * x.chosen_logratios) + 1 - torch.sigmoid(beta * x.margin)
    return ref_rewards(x, beta, losses)

register("apo_down", "Anchored preference optimization (down): lower both, rejected more; for chosen worse than the model's own output.",
         "D'Oosterlinck et al. 2024, Anchored Preference Optimization and Contrastive Revisions, eq. 8", formula="σ(β r_w) + 1 − σ(β h)")(apo_down)


def aot(x: PairLogps, beta: float, label_smoothing: float) -> LossOutput:
    policy_sorted = torch.sort(x.policy_chosen - x.policy_rejected).values  # (B,): sorted over the batch
    ref_sorted = torch.sort(x.reference_chosen - x.reference_rejected).values
    return ref_rewards(x, beta, smoothed_sigmoid(beta * (policy_sorted - ref_sorted), label_smoothing))

register("aot", "Alignment via optimal transport, paired: sorted policy log-odds against sorted reference log-odds (batch-level).",
         "Melnyk et al. 2024, Distributional Preference Alignment of LLMs via Optimal Transport", {"label_smoothing": 0.0}, domains={"label_smoothing": "[0, 0.5]"}, formula="−(1−ε) log σ(β d_i) − ε log σ(−β d_i), d = sort(πθ log-odds) − sort(πref log-odds) over the batch")(aot)


def aot_pair(x: PairLogps, beta: float, label_smoothing: float) -> LossOutput:
    chosen_sorted = torch.sort(x.chosen_logratios).values  # (B,): sorted over the batch
    rejected_sorted = torch.sort(x.rejected_logratios).values
    return ref_rewards(x, beta, smoothed_sigmoid(beta * (chosen_sorted - rejected_sorted), label_smoothing))

register("aot_pair", "Alignment via optimal transport, unpaired form: sorted chosen log-ratios against sorted rejected log-ratios (TRL 1.16 'aot_unpaired').",
         "Melnyk et al. 2024, Distributional Preference Alignment of LLMs via Optimal Transport", {"label_smoothing": 0.0}, domains={"label_smoothing": "[0, 0.5]"}, formula="−(1−ε) log σ(β d_i) − ε log σ(−β d_i), d = sort(r_w) − sort(r_l) over the batch")(aot_pair)


def discopop(x: PairLogps, beta: float, tau: float) -> LossOutput:
    z = beta * x.margin
    mix = torch.sigmoid(z / tau)
    losses = -F.logsigmoid(z) * (1 - mix) + torch.exp(-z) * mix
    return ref_rewards(x, beta, losses)

register("discopop", "DiscoPOP: log-ratio-modulated blend of logistic and exponential losses, temperature τ.",
         "Chan et al. 2024, Discovering Preference Optimization Algorithms with and for Large Language Models, eq. 5", {"tau": 0.05}, domains={"tau": "(0, inf)"}, formula="−log σ(z) (1 − σ(z/τ)) + e^(−z) σ(z/τ), z = β h")(discopop)

