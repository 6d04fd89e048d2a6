"""`torch.compile` of a causal LM's decoder layers, in place, for `experimental.compile`."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .logprobs import decoder_and_head


def compile_layers(model: torch.nn.Module, backend: str = "inductor", dynamic: bool = True, mode: str = "default") -> int:
    """Compile each decoder layer of `model` (also through a peft wrapper) with `torch.compile`; returns how many.

    Layers are compiled one by one (`nn.Module.compile`), so parameter names, saving and gradient checkpointing are
    unchanged, the attention-mask building between layers stays eager, and one compiled graph serves every layer.
    `dynamic`: graphs for dynamic shapes from the start (packed rows change length from batch to batch); with
    `experimental.static_shapes` the batches come in a handful of shapes and each gets its own static graph (`dynamic=False`),
    which `mode="reduce-overhead"` captures as CUDA graphs on a GPU.
    """
    decoder, _ = decoder_and_head(model)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        raise ConfigError(f"experimental.compile: {type(decoder).__name__} has no `layers` list of decoder layers to compile. "
                          "Fix: set experimental.compile: false for this model.")
    for layer in layers:
        layer.compile(backend=backend, dynamic=dynamic, mode=None if mode == "default" else mode)
    return len(layers)
