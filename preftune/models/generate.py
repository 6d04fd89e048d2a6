"""Batched generation from token-id prompts (sampling or greedy), with the response cut at its first EOS: transformers'
`generate`, or a decode loop that drops each row from the batch (and its KV cache) as soon as it ends."""

from __future__ import annotations

import inspect
from typing import Any
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


def filter_logits(logits: torch.Tensor, settings: GenerationConfig) -> torch.Tensor:
    """Next-token logits after temperature, top-k and top-p (nucleus) filtering, as sampling uses them; removed tokens get -inf."""
    logits = logits / settings.temperature
    if settings.top_k:
        kth = torch.topk(logits, min(settings.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = ordered.softmax(-1)
        drop = probs.cumsum(-1) - probs >= settings.top_p  # the fewest most likely tokens whose mass reaches top_p stay
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_tokens(logits: torch.Tensor, settings: GenerationConfig, rng: torch.Generator | None) -> torch.Tensor:
    """One token per row drawn from softmax(`filter_logits`): the first token whose cumulative probability exceeds a
    uniform draw (one random number per row; `torch.multinomial` is several times slower: bench/sampling_draw.py)."""
    cdf = filter_logits(logits, settings).softmax(-1).cumsum(-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=rng, device=logits.device, dtype=cdf.dtype) * total
    u = torch.minimum(u, total.nextafter(torch.zeros_like(total)))  # below the total: a token of probability 0 is never drawn
    return torch.searchsorted(cdf, u, right=True).squeeze(1)


def _left_padded(chunk: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in chunk)
    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, p in enumerate(chunk):
        ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p):] = 1
    return ids, mask


def _forward_parameters(model: torch.nn.Module) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters)


def _cache_of(out: Any) -> Any:
    found = getattr(out, "cache", None)
    return found if found is not None else out.past_key_values


@torch.no_grad()
def decode_dropping_finished(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, settings: GenerationConfig, eos: set[int],
                             rng: torch.Generator | None) -> list[tuple[list[int], bool]]:
    """Each row's new tokens (EOS last when it ended) and whether it ended: a KV-cache decode loop in which a row that
    emits EOS leaves the batch, so later steps compute only the rows still going. Greedy unless `settings.do_sample`."""
    rows = ids.shape[0]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    accepts = _forward_parameters(model)
    cache_arg = "cache" if "cache" in accepts else "past_key_values"  # the KV cache's name: `cache` in recent transformers
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}  # the prompt's LM head for its last token only
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **last_only)
    cache, logits = _cache_of(out), out.logits[:, -1, :].float()
    next_pos = positions[:, -1] + 1
    alive = torch.arange(rows, device=ids.device)
    stops = torch.tensor(sorted(eos), device=ids.device)
    tokens: list[list[int]] = [[] for _ in range(rows)]
    ended = [False] * rows
    for step in range(settings.max_new_tokens):
        if settings.do_sample:
            tok = sample_tokens(logits, settings, rng)
        else:
            tok = logits.argmax(-1)
        for r, t in zip(alive.tolist(), tok.tolist()):
            tokens[r].append(t)
        done = torch.isin(tok, stops)
        for r in alive[done].tolist():
            ended[r] = True
        if step == settings.max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            alive, tok, mask, next_pos = alive[keep], tok[keep], mask[keep], next_pos[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None], use_cache=True, **{cache_arg: cache})
        cache, logits = _cache_of(out), out.logits[:, -1, :].float()
        next_pos = next_pos + 1
    return [(t, e) for t, e in zip(tokens, ended)]


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
    rng = torch.Generator(device).manual_seed(settings.seed) if settings.drop_finished else None
    for start in range(0, len(prompts), settings.batch_size):
        chunk = prompts[start:start + settings.batch_size]
        ids, mask = _left_padded(chunk, pad)
        ids, mask = ids.to(device), mask.to(device)
        if settings.drop_finished:
            decoded = decode_dropping_finished(model, ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0), settings, eos, rng)
        else:
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens, num_return_sequences=k,
                                 pad_token_id=pad, eos_token_id=sorted(eos), use_cache=True, **sampling)
            decoded = [_cut(row, eos) for row in out[:, ids.shape[1]:].cpu().tolist()]
        for j, (resp, finished) in enumerate(decoded):
            samples.append(Sample(start + j // k, j % k, resp or [pad], finished))
        if on_batch is not None:
            on_batch(len(chunk))
    if was_training:
        model.train()
    return samples
