"""Greedy answers to a few held-out prompts before and after SFT, kept in the run folder (samples.jsonl) for the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import GenerationConfig
from ..data.prepare import TokenizedSplit
from ..data.records import as_text
from ..models.generate import generate
from ..run_files import SAMPLES, write_jsonl
from .artifacts import TEXT_LIMIT


def sample_answers(model: torch.nn.Module, tokenizer: Any, split: TokenizedSplit, n: int, settings: GenerationConfig,
                   device: torch.device | str, step: int) -> list[dict[str, Any]]:
    """The model's greedy answers to the first `n` prompts of `split` (as trained: the tokenized prompt), one record per
    prompt with the prompt, the held-out completion (`target`), the answer and `step`."""
    greedy = settings.model_copy(update={"do_sample": False, "num_samples": 1, "batch_size": max(1, n)})
    pairs, examples = split.pairs[:n], split.examples[:n]
    answers = generate(model, tokenizer, [p.prompt for p in pairs], greedy, device)
    return [{"step": step, "prompt": as_text(ex.prompt)[:TEXT_LIMIT], "target": as_text(getattr(ex, "completion", getattr(ex, "chosen", "")))[:TEXT_LIMIT],
             "answer": tokenizer.decode(a.ids, skip_special_tokens=True)[:TEXT_LIMIT], "finished": a.finished}
            for ex, a in zip(examples, answers)]


def add_samples(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Append `records` to the run's samples.jsonl (rewritten whole, so a resumed run keeps the answers from before training)."""
    path = run_dir / SAMPLES
    kept = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.exists() else []
    write_jsonl(path, kept + records)
