"""What one sampling step costs over the embedded model's vocabulary on this CPU: the LM head's matrix multiply for
256 rows (the iterate example's 64 questions × 4 samples), then drawing a token per row with `torch.multinomial`
against preftune's `sample_tokens` (one uniform draw per row against the cumulative softmax), at temperature 0.7.

    python bench/sampling_draw.py          # writes bench/results/sampling_draw.json

Median milliseconds over 9 repeats, after one warm-up."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from preftune.config import GenerationConfig
from preftune.models.generate import filter_logits, sample_tokens

ROWS, HIDDEN, VOCAB = 256, 576, 49152  # SmolLM2-135M's hidden size and vocabulary


def median_ms(f: Callable[[], object], repeats: int = 9) -> float:
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    weight, hidden = torch.randn(VOCAB, HIDDEN) * 0.02, torch.randn(ROWS, HIDDEN)
    logits = torch.nn.functional.linear(hidden, weight) * 50  # a peaked distribution, as a trained model's
    settings = GenerationConfig(do_sample=True, temperature=0.7)
    rng = torch.Generator().manual_seed(0)
    result = {"rows": ROWS, "vocab": VOCAB, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "lm_head_matmul_ms": median_ms(lambda: torch.nn.functional.linear(hidden, weight)),
              "multinomial_draw_ms": median_ms(lambda: torch.multinomial(filter_logits(logits, settings).softmax(-1), 1, generator=rng)),
              "sample_tokens_ms": median_ms(lambda: sample_tokens(logits, settings, rng))}
    out = Path(__file__).resolve().parent / "results" / "sampling_draw.json"
    out.write_text(json.dumps({"command": "python bench/sampling_draw.py", **result}, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
