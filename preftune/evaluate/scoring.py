"""Summed response log-probs of tokenized pairs under one model, batch by batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..data.batch import collate
from ..data.tokenize import TokenizedPair
from ..models.logprobs import sequence_logps


@torch.no_grad()
def pair_logps(model: torch.nn.Module, pairs: Sequence[TokenizedPair], pad_id: int, batch_size: int = 8, chunk: int = 1024,
               layout: str = "packed", device: torch.device | str = "cpu", on_batch: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(chosen|prompt), log π(rejected|prompt)) for every pair, in order, as float64 CPU tensors."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].prompt) + len(pairs[i].chosen) + len(pairs[i].rejected))
    chosen = torch.zeros(len(pairs), dtype=torch.float64)
    rejected = torch.zeros(len(pairs), dtype=torch.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate(layout, [pairs[i] for i in idx], idx, pad_id).to(device)
        out = sequence_logps(model, batch, chunk)
        b = len(idx)
        chosen[idx] = out.chosen(b).double().cpu()
        rejected[idx] = out.rejected(b).double().cpu()
        if on_batch is not None:
            on_batch(b)
    return chosen, rejected
