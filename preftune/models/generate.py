"""Batched generation from token-id prompts (sampling or greedy), with the response cut at its first EOS."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..config import GenerationConfig


@dataclass(frozen=True)
class Sample:
    """One generated response: which prompt, which of its samples, the token ids (EOS last when it stopped by itself)."""

    prompt_index: int
    sample_index: int
    ids: list[int]
    finished: bool


def _cut(ids: list[int], eos: set[int]) -> tuple[list[int], bool]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1], True
    return ids, False


def _eos_ids(model: torch.nn.Module, tokenizer: object) -> set[int]:
    ids = {getattr(tokenizer, "eos_token_id", None)}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    ids |= set(extra) if isinstance(extra, list) else {extra}
    return {i for i in ids if i is not None}


@torch.no_grad()
def generate(model: torch.nn.Module, tokenizer: object, prompts: Sequence[list[int]], settings: GenerationConfig,
             device: torch.device | str = "cpu", on_batch: Callable[[int], None] | None = None) -> list[Sample]:
    """`settings.num_samples` responses for each prompt (left-padded batches of `settings.batch_size` prompts)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    eos = _eos_ids(model, tokenizer)
    pad = pad if pad is not None else min(eos)
    was_training = model.training
    model.eval()
    torch.manual_seed(settings.seed)
    sampling = dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or None) if settings.do_sample \
        else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    samples: list[Sample] = []
    k = settings.num_samples if settings.do_sample else 1
    for start in range(0, len(prompts), settings.batch_size):
        chunk = prompts[start:start + settings.batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, p in enumerate(chunk):
            ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p):] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=settings.max_new_tokens,
                             num_return_sequences=k, pad_token_id=pad, eos_token_id=sorted(eos), use_cache=True, **sampling)
        new = out[:, width:].cpu().tolist()
        for j, row in enumerate(new):
            resp, finished = _cut(row, eos)
            samples.append(Sample(start + j // k, j % k, resp or [pad], finished))
        if on_batch is not None:
            on_batch(len(chunk))
    if was_training:
        model.train()
    return samples
