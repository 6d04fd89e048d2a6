"""Gradients (gradcheck in float64), DPO's gradient weight, and the limits every sigmoid loss must reach."""

from __future__ import annotations

import math

import pytest
import torch

from preftune.losses import REGISTRY, compute_loss

from .test_formulas import random_inputs


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_gradcheck_float64(name: str) -> None:
    x = random_inputs(6, 8.0, seed=11)
    pc = x.pop("policy_chosen_logps").requires_grad_()
    pr = x.pop("policy_rejected_logps").requires_grad_()
    if name == "hinge":  # hinge has a kink at β·h = 1; keep inputs away from it
        pc = (pc.detach() + 3).requires_grad_()
    fn = lambda a, b: compute_loss(name, policy_chosen_logps=a, policy_rejected_logps=b, **x).losses  # noqa: E731
    assert torch.autograd.gradcheck(fn, (pc, pr), eps=1e-6, atol=1e-5)


def test_dpo_gradient_weight_is_sigmoid_of_reversed_implicit_rewards() -> None:
    x = random_inputs(10, 30.0, seed=12)
    pc = x.pop("policy_chosen_logps").requires_grad_()
    out = compute_loss("dpo", policy_chosen_logps=pc, **x)
    out.losses.sum().backward()
    beta = 0.1
    weight = torch.sigmoid(out.rejected_rewards - out.chosen_rewards)  # σ(r̂_l − r̂_w), paper §4
    torch.testing.assert_close(pc.grad, -beta * weight)


@pytest.mark.parametrize("name", ["dpo", "cdpo", "robust", "dpop", "exo_pair", "discopop", "aot", "aot_pair", "bco_pair", "nca_pair"])
def test_policy_equal_to_reference_gives_log_2_for_sigmoid_losses(name: str) -> None:
    x = random_inputs(8, 20.0, seed=13)
    x["reference_chosen_logps"] = x["policy_chosen_logps"].clone()
    x["reference_rejected_logps"] = x["policy_rejected_logps"].clone()
    out = compute_loss(name, **x)
    per_term = {"bco_pair": 2, "nca_pair": 2}.get(name, 1)  # sums of two log σ(0) terms
    if name == "exo_pair":  # KL(q||p) at q = ½ against p = (1−ε, ε): a constant, not log 2
        eps = REGISTRY[name].params["label_smoothing"]
        want = 0.5 * (math.log(0.5) - math.log1p(-eps)) + 0.5 * (math.log(0.5) - math.log(eps))
    elif name == "discopop":  # at z = 0 the blend is ½·log 2 + ½·exp(0)
        want = 0.5 * math.log(2) + 0.5
    else:
        want = per_term * math.log(2)
    torch.testing.assert_close(out.losses, torch.full_like(out.losses, want))


def test_dpo_loss_and_gradient_vanish_as_margin_grows() -> None:
    prev_loss, prev_grad = math.inf, math.inf
    for margin in [1.0, 10.0, 100.0, 1000.0]:
        pc = torch.tensor([margin], dtype=torch.float64, requires_grad=True)
        out = compute_loss("dpo", policy_chosen_logps=pc, policy_rejected_logps=torch.zeros(1, dtype=torch.float64),
                           reference_chosen_logps=torch.zeros(1, dtype=torch.float64), reference_rejected_logps=torch.zeros(1, dtype=torch.float64))
        out.losses.sum().backward()
        loss, grad = out.losses.item(), abs(pc.grad.item())
        assert loss < prev_loss and grad < prev_grad
        prev_loss, prev_grad = loss, grad
    assert prev_loss < 1e-40 and prev_grad < 1e-40
