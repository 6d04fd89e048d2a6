"""Supervised fine-tuning, the stage before preference optimization: the token-mean negative log-likelihood of each
example's completion (the batch's chosen slots; rejected slots are empty), with TRL's metric names."""

from __future__ import annotations

import math

import torch

from ..data.batch import PreferenceBatch
from ..models.logprobs import policy_logps

Values = dict[str, torch.Tensor]


def nll_on_batch(model: torch.nn.Module, batch: PreferenceBatch, chunk: int) -> tuple[torch.Tensor, Values]:
    """The batch's token-mean NLL over completion tokens (weighted by each example's weight), with gradients, and its
    values: per-sequence means, and `sum/` totals (NLL, tokens, top-1 hits) from which `summarize` makes the step's
    token-mean loss and accuracy."""
    out = policy_logps(model, batch, chunk)
    b = batch.num_pairs
    logps = out.chosen(b)
    tokens = batch.lengths[:b].to(logps.dtype)
    w = batch.weights.to(logps.dtype)
    value = -(w * logps).sum() / (w * tokens).sum().clamp(min=1)
    hits = out.top1[:b] if out.top1 is not None else torch.zeros_like(logps)
    values = {"logps/completion": logps.detach().float(), "lengths/completion": tokens.float(),
              "sum/nll": -logps.detach().float(), "sum/tokens": tokens.float(), "sum/top1": hits.float()}
    return value, values


def summarize(metrics: dict[str, float]) -> dict[str, float]:
    """TRL's SFT metrics from the totals: `loss` (token-mean NLL), `mean_token_accuracy`, `perplexity` = exp(loss)."""
    out = {k: v for k, v in metrics.items() if not k.startswith("sum/")}
    tokens = metrics.get("sum/tokens", 0.0)
    if tokens > 0:
        out["loss"] = metrics["sum/nll"] / tokens
        out["mean_token_accuracy"] = metrics["sum/top1"] / tokens
        out["perplexity"] = math.exp(min(out["loss"], 50.0))
        out["num_completion_tokens"] = tokens
    return out
