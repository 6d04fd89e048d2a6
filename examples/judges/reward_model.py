"""A reward-model judge read from a local folder (no network), for `preftune eval` and `preftune iterate`:

    PYTHONPATH=examples/judges preftune eval --model runs/quickstart --data pairs.jsonl \
        --judge reward_model:score --judge-args '{"path": "/models/my-reward-model"}'

The folder holds a Hugging Face sequence-classification model with one output (a reward model) and its tokenizer.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch


@lru_cache(maxsize=2)
def _load(path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model


@torch.no_grad()
def score(prompt: str, response: str, path: str, max_length: int = 1024) -> float:
    """The reward model's score of `response` to `prompt`."""
    tokenizer, model = _load(path)
    inputs = tokenizer(prompt, response, return_tensors="pt", truncation=True, max_length=max_length)
    return float(model(**inputs).logits[0, 0])
