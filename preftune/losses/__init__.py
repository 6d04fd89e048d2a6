"""The preference-loss family: pure functions of per-sequence log-probabilities, behind one registry.

    from preftune.losses import compute_loss, LOSSES
    out = compute_loss("dpo", policy_chosen_logps=..., policy_rejected_logps=...,
                       reference_chosen_logps=..., reference_rejected_logps=...,
                       chosen_lengths=..., rejected_lengths=..., beta=0.1)
    out.losses, out.chosen_rewards, out.rejected_rewards   # each (B,)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import pairwise as _pairwise, reference_free as _reference_free  # noqa: F401  (importing registers the losses)
from . import kto as _kto
from .kto import KTOOutput, kto_reference_point, kto_loss
from .registry import REGISTRY, LossSpec, check_param, get_spec
from .types import LossOutput, PairLogps

LOSSES: dict[str, str] = {name: f"{spec.description} [{spec.paper}]" for name, spec in sorted(REGISTRY.items())}
LOSSES[_kto.NAME] = f"{_kto.DESCRIPTION}; trains on unpaired or split pairs (kto_loss() in Python). [{_kto.PAPER}]"
UNPAIRED = (_kto.NAME,)  # losses of single labelled completions rather than pairs
NAMES = tuple(sorted([*REGISTRY, *UNPAIRED]))


def is_unpaired(name: str) -> bool:
    """True for a loss of single labelled completions (KTO) rather than of pairs."""
    return name in UNPAIRED


def loss_params(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The variant's parameters: its defaults updated with `given`; unknown keys raise ValueError naming the valid ones."""
    if name not in NAMES:
        raise KeyError(f"unknown loss '{name}'; valid names: {', '.join(NAMES)}")
    defaults, domains = (_kto.PARAMS, _kto.DOMAINS) if name == _kto.NAME else (get_spec(name).params, get_spec(name).domains)
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"loss '{name}' has no parameter(s) {sorted(unknown)}; it takes {sorted(defaults) or 'none'}")
    for key, value in given.items():
        check_param(name, key, value, domains[key])
    return {**defaults, **given}


def default_beta(name: str) -> float:
    """β a loss takes when none is set (0.1; SimPO 2.0)."""
    return _kto.DEFAULT_BETA if name == _kto.NAME else get_spec(name).default_beta


def uses_reference(name: str) -> bool:
    """False for reference-free losses (SimPO, ORPO), which need no reference model at all."""
    return True if name == _kto.NAME else get_spec(name).uses_reference


def compute_loss(name: str, *, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                 reference_chosen_logps: torch.Tensor | None = None, reference_rejected_logps: torch.Tensor | None = None,
                 chosen_lengths: torch.Tensor | None = None, rejected_lengths: torch.Tensor | None = None,
                 beta: float | None = None, length_normalize: bool = False, reference_free: bool = False,
                 **variant_params: Any) -> LossOutput:
    """Per-example losses and implicit rewards of the loss `name` (see `LOSSES`).

    Args:
        policy_*_logps: (B,) log πθ summed over response tokens. reference_*_logps: (B,) log πref, or None for a
            reference-free loss or `reference_free=True` (a uniform reference: zeros).
        chosen_lengths, rejected_lengths: (B,) response token counts; needed by length-normalized variants.
        beta: β; None takes the variant's default (0.1, SimPO 2.0).
        length_normalize: divide every log-prob by its response length first (average instead of sum).
        variant_params: the variant's own parameters (e.g. label_smoothing, lambda_, alpha).
    Returns:
        `LossOutput(losses, chosen_rewards, rejected_rewards)`.
    """
    if name == "kto":
        raise ValueError("kto is unpaired: call preftune.losses.kto_loss(...) with per-example log-probs and labels")
    spec = get_spec(name)
    params = loss_params(name, variant_params)
    x = _inputs(spec, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                chosen_lengths, rejected_lengths, length_normalize, reference_free)
    return spec.fn(x, spec.default_beta if beta is None else beta, **params)


def compute_weighted(components: Sequence[tuple[str, float, dict[str, Any]]], *, beta: float | None = None,
                     length_normalize: bool = False, reference_free: bool = False, **logps: torch.Tensor | None) -> LossOutput:
    """Σ weight·loss over several (name, weight, params) components; rewards come from the first component."""
    total: torch.Tensor | None = None
    first: LossOutput | None = None
    for name, weight, params in components:
        out = compute_loss(name, beta=beta, length_normalize=length_normalize, reference_free=reference_free, **logps, **params)
        first = first or out
        total = weight * out.losses if total is None else total + weight * out.losses
    if first is None or total is None:
        raise ValueError("compute_weighted needs at least one component")
    return LossOutput(total, first.chosen_rewards, first.rejected_rewards)


def _inputs(spec: LossSpec, pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor | None, rr: torch.Tensor | None,
            lc: torch.Tensor | None, lr: torch.Tensor | None, length_normalize: bool, reference_free: bool) -> PairLogps:
    if spec.uses_reference and not reference_free and (rc is None or rr is None):
        raise ValueError(f"loss '{spec.name}' needs reference log-probs (or reference_free=True for a uniform reference)")
    if not spec.uses_reference or reference_free or rc is None or rr is None:
        rc, rr = torch.zeros_like(pc), torch.zeros_like(pr)
    lc = torch.ones_like(pc) if lc is None else lc.to(pc.dtype).clamp(min=1)
    lr = torch.ones_like(pr) if lr is None else lr.to(pr.dtype).clamp(min=1)
    if length_normalize:
        pc, pr, rc, rr = pc / lc, pr / lr, rc / lc, rr / lr
    return PairLogps(pc, pr, rc, rr, lc, lr)


__all__ = ["compute_loss", "compute_weighted", "default_beta", "is_unpaired", "kto_reference_point", "kto_loss", "KTOOutput", "LOSSES", "NAMES", "UNPAIRED", "uses_reference", "LossOutput", "PairLogps", "REGISTRY", "loss_params"]
