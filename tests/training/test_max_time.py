"""`train.max_time`: a wall-time budget counted from the start of the run; the run stops after the step that ends past
it and saves as at its last step."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from preftune.config import load_config
from preftune.errors import ConfigError
from preftune.training.run import train

from .helpers import tiny_config, train_metrics, weights


def test_a_run_stops_after_the_step_that_ends_past_its_budget_and_saves(tmp_path: Path, tiny_model_dir: Path) -> None:
    budget = 4.0
    cfg = tiny_config(tmp_path, tiny_model_dir, "train.max_steps=500", f"train.max_time={budget}", "report=false")
    step_ends: list[float] = []

    def slow_step(step: int, metrics: dict) -> None:
        time.sleep(0.3)
        step_ends.append(time.time())

    t0 = time.time()
    result = train(cfg, callbacks=[slow_step], show_progress=False)
    assert result.stop_reason == "max_time"
    assert 1 <= result.steps < 500 and len(step_ends) == result.steps
    assert step_ends[-1] - t0 >= budget - 0.05  # the last step ended past the budget
    if len(step_ends) > 1:
        assert step_ends[-2] - t0 < budget + 0.05  # and the one before did not: it stopped at the first chance
    assert [m["step"] for m in train_metrics(result.output_dir)] == list(range(1, result.steps + 1))
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    saved = weights(result.output_dir)
    assert set(saved) == set(start) and any(not torch.equal(saved[k], start[k]) for k in start)  # trained weights, not the start
    assert (result.output_dir / "summary.json").exists()


def test_a_budget_never_reached_lets_the_run_finish(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = train(tiny_config(tmp_path, tiny_model_dir, "train.max_steps=3", "train.max_time=1h", "report=false"), show_progress=False)
    assert result.stop_reason is None and result.steps == 3


@pytest.mark.parametrize(("given", "seconds"), [("900", 900.0), (900, 900.0), ("90s", 90.0), ("15m", 900.0), ("1.5h", 5400.0)])
def test_max_time_reads_seconds_or_units(given: object, seconds: float) -> None:
    assert load_config({"train": {"max_time": given}}).train.max_time == seconds


@pytest.mark.parametrize("given", ["soon", "15 minutes", "-5m", 0])
def test_a_bad_max_time_names_the_key_and_the_fix(given: object) -> None:
    with pytest.raises(ConfigError, match="train.max_time"):
        load_config({"train": {"max_time": given}})
