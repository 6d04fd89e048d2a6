"""Which reference a run or an evaluation scores against: one rule, decided before any model loads, that training,
`preftune precompute-ref`, `preftune eval`, `preftune.evaluate` and iterate all go through; and the one builder that
turns the choice into a `Reference`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..models.loading import check_same_vocabulary
from .batches import Reference
from .reference import AdapterDisabledReference, NoReference, SeparateReference, StartAdapterReference, add_frozen_start_adapter

Kind = Literal["none", "separate", "adapter_disabled", "start_adapter"]
STRATEGIES = ("none", "separate", "adapter_disabled", "precomputed", "auto")


@dataclass(frozen=True)
class ReferenceChoice:
    """A reference to build: none; a separate frozen model (`load`ed from a folder, or a `model` already in memory); the
    policy with its LoRA adapter turned off; or the policy's starting adapter kept frozen beside the trained one."""

    kind: Kind
    load: str | None = None
    model: torch.nn.Module | None = None
    name: str | None = None  # how reports and logs name it
    named_by: str | None = None  # the key or flag that named it explicitly (its vocabulary is checked against the policy's)


def choose_reference(strategy: str, *, explicit: str | torch.nn.Module | None = None, named_by: str = "reference.name_or_path",
                     adapter_base: str | None = None, start: str | torch.nn.Module | None = None,
                     start_adapter: str | None = None, keep_start_adapter: bool = False) -> ReferenceChoice:
    """The reference of a strategy (after `reference.strategy: auto` is resolved for training):

    - none: no reference.
    - adapter_disabled: the adapter policy with its adapter off (or, with `keep_start_adapter`, its starting adapter).
    - separate / precomputed / auto: the `explicit` reference when one is named; else, for an adapter policy (its base
      is `adapter_base`) under precomputed or auto, the adapter turned off (or its kept starting adapter); else the
      policy's `start` (`start_adapter` merged in when it is kept) as a separate model; auto with no start: none.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"reference strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if strategy == "none":
        return ReferenceChoice("none")
    adapter = adapter_base is not None
    turn_off = strategy == "adapter_disabled" or (adapter and explicit is None and strategy in ("precomputed", "auto"))
    if turn_off:
        if keep_start_adapter:
            return ReferenceChoice("start_adapter", name="the starting adapter, frozen")
        return ReferenceChoice("adapter_disabled", name=f"adapter disabled (its base: {adapter_base})")
    if isinstance(explicit, torch.nn.Module):
        return ReferenceChoice("separate", model=explicit, name=str(getattr(explicit, "name_or_path", "") or "reference passed from Python"),
                               named_by=named_by)
    if explicit is not None:
        return ReferenceChoice("separate", load=explicit, name=explicit, named_by=named_by)
    if isinstance(start, torch.nn.Module):
        return ReferenceChoice("separate", model=start, name="a frozen copy of the policy's start")
    if start is None:
        if strategy == "auto":
            return ReferenceChoice("none")
        raise ValueError(f"reference strategy {strategy}: a separate reference needs the policy's start model")
    load = start_adapter if keep_start_adapter and start_adapter else start
    return ReferenceChoice("separate", load=load, name=load)


def make_reference(choice: ReferenceChoice, policy: torch.nn.Module | None, chunk: int, load: Callable[[str], torch.nn.Module], *,
                    place: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m,
                    unwrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m, tokenizer: Any = None) -> Reference:
    """The `Reference` of a choice: `load(path)` loads a separate model (frozen), `place` moves or shards it, `unwrap`
    reaches the policy inside a distributed wrapper; an explicitly named reference must score the policy's token ids."""
    if choice.kind == "none":
        return NoReference()
    if choice.kind in ("adapter_disabled", "start_adapter"):
        if policy is None:
            raise ValueError(f"reference {choice.kind} needs the adapter policy")
        if choice.kind == "adapter_disabled":
            return AdapterDisabledReference(policy, chunk, unwrap)
        add_frozen_start_adapter(unwrap(policy))
        return StartAdapterReference(policy, chunk, unwrap)
    model = choice.model
    if model is None:
        assert choice.load is not None
        model = load(choice.load)
    if choice.named_by is not None and policy is not None:
        check_same_vocabulary(unwrap(policy), model, choice.name or "", choice.named_by, tokenizer)
    return SeparateReference(place(model), chunk)
