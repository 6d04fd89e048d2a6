"""NaN/inf in the loss or gradients: skip the step (counted, batch named) or stop keeping the last checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import preftune.training.objectives as scoring  # where the training step calls loss_on_batch
from preftune.training.checkpoint import list_checkpoints
from preftune.training.loop import NonFiniteLoss
from preftune.training.run import train

from ..training.helpers import metrics, tiny_config, train_metrics

POISONED = 9  # data-set position of the pair whose loss turns NaN


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the loss NaN on any batch holding pair POISONED; returns the list of steps where it happened."""
    real = scoring.loss_on_batch
    seen: list[int] = []

    def poisoned(model, batch, *args, **kwargs):
        loss, values = real(model, batch, *args, **kwargs)
        if POISONED in batch.indices.tolist():
            seen.append(1)
            return loss * float("nan"), values
        return loss, values

    monkeypatch.setattr(scoring, "loss_on_batch", poisoned)
    return seen


def test_skip_counts_the_step_names_the_pairs_and_finishes(tmp_path: Path, tiny_model_dir: Path, poison: list[int]) -> None:
    result = train(tiny_config(tmp_path, tiny_model_dir, "train.on_nonfinite=skip", "train.max_steps=6"), show_progress=False)
    assert poison and result.skipped_steps == 1 and result.steps == 6
    skipped = [m for m in metrics(result.output_dir) if "skipped/pairs" in m]
    assert len(skipped) == 1 and POISONED in skipped[0]["skipped/pairs"]
    assert [m["step"] for m in train_metrics(result.output_dir)] == list(range(1, 7))
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in train_metrics(result.output_dir))
    assert '"skipped_steps": 1' in (result.output_dir / "summary.json").read_text()


def test_stop_keeps_the_last_checkpoint_and_names_the_batch(tmp_path: Path, tiny_model_dir: Path, poison: list[int]) -> None:
    cfg = tiny_config(tmp_path, tiny_model_dir, "train.max_steps=6", "train.save_every=1")
    with pytest.raises(NonFiniteLoss, match=rf"step 3: the loss is nan on the batch of pairs \[.*{POISONED}.*\].*last checkpoint is kept"):
        train(cfg, show_progress=False)
    assert [p.name for p in list_checkpoints(Path(cfg.output_dir))] == ["checkpoint-1", "checkpoint-2"]


def test_skip_gives_up_after_max_skipped_steps(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = scoring.loss_on_batch
    monkeypatch.setattr(scoring, "loss_on_batch", lambda *a, **k: (lambda lv: (lv[0] * float("inf"), lv[1]))(real(*a, **k)))
    cfg = tiny_config(tmp_path, tiny_model_dir, "train.on_nonfinite=skip", "train.max_skipped_steps=2")
    with pytest.raises(NonFiniteLoss, match=r"2 steps were skipped already \(train.max_skipped_steps\)"):
        train(cfg, show_progress=False)
