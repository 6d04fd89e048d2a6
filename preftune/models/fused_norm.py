"""RMSNorm layers (`weight * (x * rsqrt(mean(x²) + eps))`, as in Llama, Mistral, Qwen2, SmolLM) run as one autograd
function that keeps the input and its per-token scale for the backward pass and recomputes the normalized input there.
Autograd also keeps that normalized input whenever the weight trains (full fine-tuning): one hidden-sized tensor per
norm and token less, same gradients."""

from __future__ import annotations

import torch

from .fusing import fuse_modules


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or wider when it already is (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class RMSNorm(torch.autograd.Function):
    """weight * (x * rstd).to(x.dtype) with rstd = rsqrt(mean(x²) + eps) in float32 (or x's wider type), saving
    (x, weight, rstd)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = _wide(x)
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(eps))
        ctx.save_for_backward(x, weight, rstd)
        return weight * (xf * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight, rstd = ctx.saved_tensors
        need_x, need_weight, _ = ctx.needs_input_grad
        normed = _wide(x) * rstd
        grad_weight = None
        if need_weight:
            grad_weight = (grad * normed.to(x.dtype)).reshape(-1, weight.shape[-1]).sum(0).to(weight.dtype)
        grad_x = None
        if need_x:
            grad_normed = _wide(grad * weight)
            dot = (grad_normed * normed).mean(-1, keepdim=True)
            grad_x = grad_normed.sub_(normed.mul_(dot)).mul_(rstd).to(x.dtype)
        return grad_x, grad_weight, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * (x * rsqrt(mean(x²) + eps)).to(x.dtype); with gradients on, through `RMSNorm` (x and its scale kept,
    the normalized input recomputed in backward)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return RMSNorm.apply(x, weight, eps)
    xf = _wide(x)
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _fused_forward(self: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return rms_norm(hidden_states, self.weight, self.variance_epsilon)


def is_rms_norm(module: torch.nn.Module) -> bool:
    """Whether `module` computes `weight * (x * rsqrt(mean(x²) + variance_epsilon)).to(x.dtype)`: an `...RMSNorm` with a
    1-D weight and a `variance_epsilon` whose output equals `rms_norm`'s on a random input (variants that scale by
    `1 + weight` or cast in another order, such as Gemma's, differ and are left alone)."""
    weight, eps = getattr(module, "weight", None), getattr(module, "variance_epsilon", None)
    if not type(module).__name__.endswith("RMSNorm") or not isinstance(weight, torch.Tensor) or weight.dim() != 1 or not isinstance(eps, float):
        return False
    probe = torch.randn(2, 3, weight.shape[0], generator=torch.Generator().manual_seed(0)).to(weight.device, weight.dtype)
    try:
        with torch.no_grad():
            return bool(torch.equal(module(probe), rms_norm(probe, weight, eps)))
    except (RuntimeError, TypeError):  # weights not materialized here (sharded, meta)
        return False


def fuse_norms(model: torch.nn.Module) -> int:
    """Run every RMSNorm of `model` through `rms_norm`; returns how many were changed. Other norms are left alone."""
    return fuse_modules(model, is_rms_norm, _fused_forward)
