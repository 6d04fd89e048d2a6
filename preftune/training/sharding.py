"""FSDP on CPU processes. accelerate runs FSDP only on accelerators: launched with an FSDP config on a machine without
one, it sets up plain data parallelism (DDP over gloo) and never shards. There preftune shards with torch's own FSDP2
(`fully_shard`, each decoder layer and then the whole model) over accelerate's gloo process group, and gathers full
state dicts for checkpoints and the final model."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import ConfigError


def cpu_fsdp(accelerator: Any) -> bool:
    """Whether this run was launched with an FSDP config but accelerate set up CPU data parallelism instead."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and accelerator.distributed_type == "MULTI_CPU"  # DistributedType is a str enum


def _layer_classes(model: torch.nn.Module) -> set[str]:
    named = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    names = {n.strip() for n in named.split(",") if n.strip()}
    return names or set(getattr(model, "_no_split_modules", None) or ())


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """Shard `model` in place across the processes: each decoder layer (the launch config's
    `fsdp_transformer_layer_cls_to_wrap`, else the model's `_no_split_modules`), then the rest."""
    from torch.distributed.fsdp import fully_shard

    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() not in ("false", "no_shard", "shard_grad_op")
    names = _layer_classes(model)
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(f"FSDP: the model has no module of class {sorted(names) or 'unknown'} to shard by. Fix: set "
                          "fsdp_transformer_layer_cls_to_wrap in the accelerate config to the model's decoder layer class.")
    for layer in layers:
        fully_shard(layer, reshard_after_forward=reshard)
    fully_shard(model, reshard_after_forward=reshard)
    return model


def _options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


WRAPPED = "model."  # the sharded root is the log-prob module (LogpsModel); the causal LM is its `model`


def full_state(root: torch.nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The causal LM's state dict under its own names (as `save_pretrained` / `save_trainable` name them: tied weights
    once), gathered from the sharded log-prob module `root` (a collective: every process calls it); full tensors on the
    CPU of rank 0, empty elsewhere. `trainable_only`: the parameters that train."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    lm = root.model
    keep = ({n for n, p in lm.named_parameters() if p.requires_grad} if trainable_only
            else {n for n, _ in lm.named_parameters()} | {n for n, _ in lm.named_buffers()})
    state = get_model_state_dict(root, options=_options())
    return {k.removeprefix(WRAPPED): v for k, v in state.items() if k.removeprefix(WRAPPED) in keep}


def load_full_state(root: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full (unsharded) state dict of the causal LM (its own names), given on every process, into the sharded
    log-prob module `root`."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(root, {WRAPPED + k: v for k, v in state.items()}, options=_options(strict=False))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state for the whole model, gathered (a collective)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options())


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_options())
