"""Batched generation from token-id prompts, response length statistics, and a KL(policy ‖ reference) estimate."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .. import stats
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


def length_stats(samples: Sequence[Sample]) -> dict[str, float]:
    """Response lengths in tokens: mean, median, 90th percentile, max, and the share cut off by max_new_tokens."""
    if not samples:
        return {}
    return stats.length_stats([len(s.ids) for s in samples], (90,)) | {"truncated_fraction": sum(not s.finished for s in samples) / len(samples)}


def kl_estimate(policy_logps: torch.Tensor, reference_logps: torch.Tensor, settings: GenerationConfig) -> dict[str, object]:
    """Monte-Carlo KL(π ‖ πref) per response, in nats: the mean of log π(y|x) − log πref(y|x) over samples y ~ π, with its
    standard error. Unbiased only for plain sampling (temperature 1, no top-p/top-k); otherwise it says so."""
    d = (policy_logps.double() - reference_logps.double())
    n = d.numel()
    out: dict[str, object] = {"estimate": d.mean().item() if n else float("nan"),
                              "stderr": (d.std().item() / math.sqrt(n)) if n > 1 else float("nan"), "samples": n}
    if not settings.do_sample or settings.temperature != 1.0 or settings.top_p < 1.0 or settings.top_k:
        out["note"] = ("samples are not drawn from π itself (greedy, temperature ≠ 1, top-p or top-k), so this is the mean "
                       "log-ratio on those samples, not an unbiased KL estimate")
    return out
