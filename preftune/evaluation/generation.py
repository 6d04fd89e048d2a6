"""Generation for evaluation: batched generation (models.generate), response length statistics, and a KL(policy ‖ reference) estimate."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import stats
from ..config import GenerationConfig
from ..models.generate import Sample


def length_summary(lengths: Sequence[int], finished: Sequence[bool]) -> dict[str, float]:
    """Response lengths in tokens: mean, median, 90th percentile, max, and the share cut off by max_new_tokens (not
    `finished`); {} when there are none."""
    if not lengths:
        return {}
    return stats.length_stats(lengths, (90,)) | {"truncated_fraction": sum(not f for f in finished) / len(lengths)}


def sample_lengths(samples: Sequence[Sample]) -> dict[str, float]:
    """`length_summary` of generated samples."""
    return length_summary([len(s.ids) for s in samples], [s.finished for s in samples])


def decode_rates(tokens: float, row_steps: float, seconds: float) -> dict[str, float]:
    """Tokens per second, and the share of `row_steps` (rows × steps of batches decoded to their longest response) that
    fell on rows already stopped."""
    return {"tokens_per_s": tokens / seconds if seconds > 0 else float("nan"), "idle_row_share": 1.0 - tokens / row_steps if row_steps else float("nan")}


def decode_usage(samples: Sequence[Sample], prompts_per_batch: int, seconds: float) -> dict[str, float]:
    """How generation spent its decode steps: tokens kept, tokens/s, and `idle_row_share`, the share of a batch's
    row-steps that fall on rows already stopped when the batch decodes until its longest response ends (transformers'
    `generate` computes them; `generation.drop_finished` skips them)."""
    batches: dict[int, list[int]] = {}
    for s in samples:
        batches.setdefault(s.prompt_index // prompts_per_batch, []).append(len(s.ids))
    tokens = sum(sum(b) for b in batches.values())
    slots = sum(len(b) * max(b) for b in batches.values())
    return {"tokens": float(tokens), "seconds": seconds, "row_steps": float(slots), **decode_rates(tokens, slots, seconds)}


def sampled_kl(policy_logps: torch.Tensor, reference_logps: torch.Tensor, settings: GenerationConfig) -> dict[str, object]:
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
