"""One registry of preference losses: name -> function, description, paper, default parameters."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .types import LossOutput, PairLogps

LossFn = Callable[..., LossOutput]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss. `params` holds each variant parameter's default; `uses_reference` is False for
    reference-free losses (SimPO, ORPO), which need no reference model at all."""

    name: str
    fn: LossFn
    description: str
    paper: str
    params: dict[str, Any] = field(default_factory=dict)
    uses_reference: bool = True
    default_beta: float = 0.1
    domains: dict[str, str] = field(default_factory=dict)  # each parameter's allowed values: "[0, 0.5)" or "tokens|sum"
    formula: str = ""  # the per-example loss in the notation of the loss reference (h, r_w, r_l, avg_w, ...)
    reward: str = "log_ratio"  # implicit reward: log_ratio = β·(log πθ − log πref); avg_logp = β·(mean per-token log πθ), no reference


REGISTRY: dict[str, LossSpec] = {}


REWARDS = {"log_ratio": "β·(log πθ(y|x) − log πref(y|x)), summed over response tokens",
           "avg_logp": "β·(mean per-token log πθ(y|x)); no reference"}


def register(name: str, description: str, paper: str, params: dict[str, Any] | None = None,
             uses_reference: bool = True, default_beta: float = 0.1, domains: dict[str, str] | None = None,
             formula: str = "", reward: str = "log_ratio") -> Callable[[LossFn], LossFn]:
    """`register(...)(fn)` adds a loss function `fn(x: PairLogps, beta: float, **params) -> LossOutput` to the registry; `domains`
    gives each parameter's allowed values (an interval such as "[0, 0.5)", or choices such as "tokens|sum")."""
    if set(domains or {}) != set(params or {}):
        raise RuntimeError(f"loss '{name}': every parameter needs a domain")
    if not formula or reward not in REWARDS:
        raise RuntimeError(f"loss '{name}': register it with its formula and a reward kind from {list(REWARDS)}")

    def add(fn: LossFn) -> LossFn:
        if name in REGISTRY:
            raise RuntimeError(f"loss '{name}' registered twice")
        REGISTRY[name] = LossSpec(name, fn, description, paper, dict(params or {}), uses_reference, default_beta, dict(domains or {}),
                                  formula, reward)
        return fn

    return add


def check_param(loss: str, key: str, value: Any, domain: str) -> None:
    """ValueError naming `loss.params.<key>` unless `value` is in `domain`: an interval "[a, b)" / "(a, inf)" of finite
    numbers (not booleans), or "|"-separated choices."""
    where = f"loss '{loss}': params.{key} = {value!r}"
    if "|" in domain:
        choices = domain.split("|")
        if value not in choices:
            raise ValueError(f"{where} must be one of {choices}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number in {domain}")
    low, high = (float(b) for b in domain[1:-1].split(","))
    above = value > low if domain[0] == "(" else value >= low
    below = value < high if domain[-1] == ")" else value <= high
    if not (above and below):
        raise ValueError(f"{where} must be in {domain}")


def get_spec(name: str) -> LossSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown loss '{name}'; valid names: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


__all__ = ["LossSpec", "REGISTRY", "REWARDS", "register", "get_spec", "PairLogps", "LossOutput"]
