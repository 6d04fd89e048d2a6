"""Time of one AdamW step over the embedded SmolLM2-135M-Instruct's parameters: torch's fused kernel against foreach.

The evidence behind `train.optimizer_impl: auto` taking the fused kernel. Alternates the two (A B A B) and reports
medians and their ratio; writes bench/results/optimizer_step.json.

    python bench/optimizer_step.py            # under a minute on a 2-core CPU
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from preftune.config import ModelConfig
from preftune.models.loading import load_model

ROUNDS, STEPS = 3, 5


def step_seconds(params: list[torch.nn.Parameter], impl: str) -> float:
    """Mean seconds of one step after a first (state-allocating) one."""
    optimizer = torch.optim.AdamW(params, lr=1e-5, **{impl: True})
    optimizer.step()
    t0 = time.perf_counter()
    for _ in range(STEPS):
        optimizer.step()
    return (time.perf_counter() - t0) / STEPS


def main() -> None:
    model = load_model(ModelConfig())
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(0)
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    times: dict[str, list[float]] = {"foreach": [], "fused": []}
    for _ in range(ROUNDS):
        for impl in times:
            times[impl].append(step_seconds(params, impl))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__},
              "parameters": sum(p.numel() for p in params), "seconds": times, "median": med, "speedup_fused": med["foreach"] / med["fused"]}
    out = Path(__file__).resolve().parent / "results" / "optimizer_step.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"{result['parameters']:,} parameters: foreach {med['foreach']:.3f} s, fused {med['fused']:.3f} s a step; fused {result['speedup_fused']:.2f}x faster")


if __name__ == "__main__":
    main()
