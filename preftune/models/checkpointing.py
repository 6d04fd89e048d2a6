"""Activation checkpointing of a causal LM's decoder layers, for `train.gradient_checkpointing`: whole layers
recomputed in the backward pass (`true`), or selective (`selective`): each layer keeps the outputs of its matrix
products and attention and recomputes the rest (activations, norms, rotary, elementwise products), which hold much of
a layer's saved memory and little of its compute."""

from __future__ import annotations

import functools
from typing import Any

import torch


def _saved_ops() -> set[Any]:
    aten = torch.ops.aten
    names = ["mm", "addmm", "bmm", "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"]
    return {getattr(aten, n).default for n in names if hasattr(aten, n)}


def _policy(saved: set[Any], ctx: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE if op in saved else CheckpointPolicy.PREFER_RECOMPUTE


def selective_context() -> Any:
    """A `context_fn` for `torch.utils.checkpoint.checkpoint` that saves matrix products and attention only."""
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    return create_selective_checkpoint_contexts(functools.partial(_policy, _saved_ops()))


def enable_checkpointing(model: torch.nn.Module, mode: bool | str) -> None:
    """Turn on transformers' gradient checkpointing of every decoder layer: whole (`True`) or `"selective"`."""
    kwargs: dict[str, Any] = {"use_reentrant": False}
    if mode == "selective":
        kwargs["context_fn"] = selective_context
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
