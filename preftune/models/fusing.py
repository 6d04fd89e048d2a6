"""Giving modules a fused forward in place of their class's, once per module (train.fused_mlp, train.fused_norm)."""

from __future__ import annotations

import types
from collections.abc import Callable

import torch

FUSED = "_preftune_fused"  # set on a module whose forward was replaced


def fuse_modules(model: torch.nn.Module, matches: Callable[[torch.nn.Module], bool], forward: Callable[..., torch.Tensor]) -> int:
    """Bind `forward` as the forward of every module of `model` that `matches` accepts and no fusing changed before;
    returns how many were changed. transformers' hub-kernel switching (`use_kernels`, on by default where the `kernels`
    package is installed) is turned off first: it puts the class's forward back at every train()/eval()."""
    for module in model.modules():
        if getattr(module, "_use_kernels", False):
            module.use_kernels = False
    n = 0
    for module in model.modules():
        if not getattr(module, FUSED, False) and matches(module):
            module.forward = types.MethodType(forward, module)
            setattr(module, FUSED, True)
            n += 1
    return n
