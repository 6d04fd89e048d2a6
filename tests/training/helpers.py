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


def assert_trained_weights(run_dir: Path, start_dir: Path) -> None:
    """The run's saved weights load, are finite, have the start model's names and shapes, and differ from the start."""
    start, saved = load_file(str(start_dir / "model.safetensors")), weights(run_dir)
    assert set(saved) == set(start) and all(saved[k].shape == start[k].shape for k in start)
    assert all(torch.isfinite(v).all() for v in saved.values())
    assert any(not torch.equal(saved[k], start[k]) for k in start), "the saved weights are the start model's"


def assert_reference_table(folder: Path, at_least: int) -> None:
    """A cached reference table holds finite, negative log-probs (sums of log-probs) of at least `at_least` pairs."""
    files = list(folder.glob("*.safetensors"))
    assert files, f"no reference table in {folder}"
    tables = [load_file(str(f)) for f in files]
    for side in ("chosen", "rejected"):
        values = torch.cat([t[side] for t in tables])
        filled = values[~torch.isnan(values)]  # pairs no run has needed yet are NaN
        assert filled.numel() >= at_least and torch.isfinite(filled).all() and (filled < 0).all(), side
