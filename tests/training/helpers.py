"""Helpers for training tests: a config for the tiny model, and reading a run's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from preftune.config import RunConfig, load_config

from ..conftest import write_jsonl

TOY = [{"prompt": f"Q{i}: pick the good word.", "chosen": f" good{i % 3}", "rejected": f" bad{i % 5} bad"} for i in range(40)]


def toy_data(folder: Path, n: int = 40) -> Path:
    return write_jsonl(folder / "toy.jsonl", TOY[:n])


def tiny_config(tmp_path: Path, model_dir: Path, *overrides: str, name: str = "run") -> RunConfig:
    data = toy_data(tmp_path)
    base = [f"model.name_or_path={model_dir}", f"data.train={data}", "data.eval_fraction=0", "train.shuffle=false",
            "train.batch_size=4", "train.max_steps=4", "train.learning_rate=1e-3", "train.warmup_ratio=0", "train.deterministic=true",
            f"output_dir={tmp_path / name}", f"data.cache_dir={tmp_path / 'tok'}", f"reference.cache_dir={tmp_path / 'ref'}"]
    return load_config(None, base + list(overrides))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def train_metrics(run_dir: Path) -> list[dict]:
    return [m for m in metrics(run_dir) if "loss" in m]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    folder = run_dir / "model"
    f = folder / "adapter_model.safetensors"
    return load_file(str(f if f.exists() else folder / "model.safetensors"))
