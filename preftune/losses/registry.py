"""One registry of preference losses: name -> function, description, paper, default parameters."""

from __future__ import annotations

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


REGISTRY: dict[str, LossSpec] = {}


def register(name: str, description: str, paper: str, params: dict[str, Any] | None = None,
             uses_reference: bool = True, default_beta: float = 0.1) -> Callable[[LossFn], LossFn]:
    """Decorator adding a loss function `fn(x: PairLogps, beta: float, **params) -> LossOutput` to the registry."""

    def add(fn: LossFn) -> LossFn:
        if name in REGISTRY:
            raise RuntimeError(f"loss '{name}' registered twice")
        REGISTRY[name] = LossSpec(name, fn, description, paper, dict(params or {}), uses_reference, default_beta)
        return fn

    return add


def get_spec(name: str) -> LossSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown loss '{name}'; valid names: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


__all__ = ["LossSpec", "REGISTRY", "register", "get_spec", "PairLogps", "LossOutput"]
