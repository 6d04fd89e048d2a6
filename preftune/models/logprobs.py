"""Per-sequence log-probabilities of the response tokens of a batch, without materializing full-vocabulary logits.

The decoder runs once over the batch's rows; only the hidden states at response positions go through
the LM head, in chunks of `chunk` tokens. With gradients on, each chunk is recomputed in the backward
pass (activation checkpointing), so memory for logits scales with the chunk, not with batch × length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from ..data.batch import PreferenceBatch
from .attention import flex_block_mask, layout_kwargs, uses_flex


@dataclass
class SequenceLogps:
    """(2B,) summed response log-probs (chosen slots first), and (2B,) mean logit over response tokens (detached)."""

    logps: torch.Tensor
    mean_logits: torch.Tensor
    top1: torch.Tensor | None = None  # (2B,) response tokens whose label is the most likely token (when asked for)

    def chosen(self, b: int) -> torch.Tensor:
        return self.logps[:b]

    def rejected(self, b: int) -> torch.Tensor:
        return self.logps[b:]


def decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body and LM head of a causal LM (also through a peft wrapper)."""
    base = model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    if decoder is None or head is None:
        raise TypeError(f"{type(base).__name__}: cannot find the decoder and LM head (needs get_decoder / get_output_embeddings)")
    return decoder, head


class LabelLogps(torch.autograd.Function):
    """log softmax(logits)[label] at each of T positions, keeping only the (T, V) logits and (T,) log-normalizers for the
    backward pass (autograd's log_softmax + gather keeps the (T, V) log-probs and makes three more (T, V) tensors in
    backward: zeros, their scatter, log_softmax's gradient; this makes one)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, -1)
        ctx.save_for_backward(logits, labels, lse)
        return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - lse

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, labels, lse = ctx.saved_tensors
        g = grad.unsqueeze(-1)
        out = (logits - lse.unsqueeze(-1)).exp_().mul_(-g)  # d logp / d logits = onehot(label) - softmax
        return out.scatter_add_(-1, labels.unsqueeze(-1), g), None


def label_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] over the last dimension, through `LabelLogps` when gradients are needed."""
    if torch.is_grad_enabled() and logits.requires_grad:
        return LabelLogps.apply(logits, labels)
    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)


def _chunk_logps(hidden: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 top1: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    logp = label_logps(logits, labels)
    hit = (logits.argmax(-1) == labels).float() if top1 else logp.new_zeros(0)
    return logp, logits.mean(-1), hit


def token_logps(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module, chunk: int,
                top1: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(label), the mean logit and (with `top1`) whether the label is the argmax, at each of T positions,
    running the head over `chunk` positions at a time."""
    weight, bias = head.weight, getattr(head, "bias", None)
    parts_lp, parts_ml, parts_hit = [], [], []
    recompute = torch.is_grad_enabled() and hidden.shape[0] > chunk
    for start in range(0, hidden.shape[0], chunk):
        h, y = hidden[start:start + chunk], labels[start:start + chunk]
        if recompute:
            lp, ml, hit = checkpoint(_chunk_logps, h, y, weight, bias, top1, use_reentrant=False)
        else:
            lp, ml, hit = _chunk_logps(h, y, weight, bias, top1)
        parts_lp.append(lp)
        parts_ml.append(ml.detach())
        parts_hit.append(hit.detach())
    return torch.cat(parts_lp), torch.cat(parts_ml), torch.cat(parts_hit)


def sequence_logps(model: torch.nn.Module, batch: PreferenceBatch, chunk: int = 1024, top1: bool = False) -> SequenceLogps:
    """Summed log πθ(response | prompt) for each of the batch's 2B sequence slots (and, with `top1`, how many of each
    slot's tokens are the model's most likely token)."""
    decoder, head = decoder_and_head(model)
    mask = flex_block_mask(batch) if uses_flex(decoder) else batch.attention_mask
    out = decoder(input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids, use_cache=False,
                  **layout_kwargs(decoder, batch))
    hidden = out.last_hidden_state[batch.rows, batch.cols]
    lp, ml, hit = token_logps(hidden, batch.labels, head, chunk, top1)
    slots = 2 * batch.num_pairs
    sums = torch.zeros(slots, dtype=lp.dtype, device=lp.device).index_add(0, batch.seq, lp)
    counts = batch.lengths.clamp(min=1).to(ml.dtype)
    mean_logits = torch.zeros(slots, dtype=ml.dtype, device=ml.device).index_add(0, batch.seq, ml) / counts
    hits = torch.zeros(slots, dtype=hit.dtype, device=hit.device).index_add(0, batch.seq, hit) if top1 else None
    return SequenceLogps(sums, mean_logits, hits)


class LogpsModel(torch.nn.Module):
    """A causal LM whose forward gives the summed response log-probs of a `PreferenceBatch`. Training wraps the policy in
    this before `accelerator.prepare`, so DDP / FSDP see the forward pass and their gradient hooks run."""

    def __init__(self, model: torch.nn.Module, chunk: int = 1024, top1: bool = False):
        super().__init__()
        self.model = model
        self.chunk = chunk
        self.top1 = top1

    def forward(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = sequence_logps(self.model, batch, self.chunk, self.top1)
        return out.logps, out.mean_logits, out.logps.new_zeros(0) if out.top1 is None else out.top1


def policy_logps(model: torch.nn.Module, batch: PreferenceBatch, chunk: int = 1024) -> SequenceLogps:
    """`sequence_logps` of a plain model, or the forward of a (prepared) `LogpsModel`."""
    inner = getattr(model, "module", model)
    if isinstance(inner, LogpsModel):
        sums, mean_logits, hits = model(batch)
        return SequenceLogps(sums, mean_logits, hits if inner.top1 else None)
    return sequence_logps(model, batch, chunk)
