"""SIGKILL at random points (during steps, during checkpoint writes), resume with resume_from: auto, and end bitwise
where an uninterrupted run ends, with a metrics log without gaps or duplicates."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ..training.helpers import toy_data
from .runner import Kill, metrics, run_until, write_config

SCHEDULES = 10
STEPS = 10


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def schedule(seed: int) -> list[Kill]:
    """1–3 kills at increasing points; about half of them land inside a checkpoint write."""
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, STEPS - 3), rng.randint(1, 3)))  # each leaves steps to run after it
    return [Kill(rng.choice(["step", "checkpoint"]), p, rng.uniform(0.0, 0.4)) for p in points]


def run_schedule(seed: int, folder: Path, model_dir: Path, data: Path) -> tuple[list[str], Path]:
    out = folder / f"run-{seed}"
    config = write_config(folder, model_dir, data, out, max_steps=STEPS)
    log = folder / f"run-{seed}.log"
    outcomes = [run_until(config, out, log, kill) for kill in schedule(seed)]
    outcomes.append(run_until(config, out, log, None))
    return outcomes, out


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = toy_data(tmp_path)
    reference_out = tmp_path / "uninterrupted"
    assert run_until(write_config(tmp_path, tiny_model_dir, data, reference_out, max_steps=STEPS), reference_out, tmp_path / "ref.log", None) == "finished"
    want = final_weights(reference_out)
    want_losses = {m["step"]: m["loss"] for m in metrics(reference_out) if "loss" in m}
    assert sorted(want_losses) == list(range(1, STEPS + 1))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda s: run_schedule(s, tmp_path, tiny_model_dir, data), range(SCHEDULES)))
    report = []
    for seed, (outcomes, out) in enumerate(results):
        report.append(f"schedule {seed}: " + "; ".join(outcomes))
        assert outcomes[-1] == "finished", (seed, outcomes, (tmp_path / f"run-{seed}.log").read_text()[-3000:])
        scheduled = len(schedule(seed))
        assert len(outcomes) == scheduled + 1 and all(o.startswith("killed") for o in outcomes[:-1]), (seed, outcomes)  # every kill landed
        got = final_weights(out)
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), f"schedule {seed}: weights differ ({outcomes})"
        steps = [m["step"] for m in metrics(out) if "loss" in m]
        assert steps == list(range(1, STEPS + 1)), f"schedule {seed}: train steps logged {steps} ({outcomes})"
        assert all(m["loss"] == want_losses[m["step"]] for m in metrics(out) if "loss" in m)
        assert not list(out.glob(".tmp-checkpoint-*")), f"schedule {seed}: half-written checkpoints left behind"
        evals = [m["step"] for m in metrics(out) if "eval/loss" in m]
        assert len(evals) == len(set(evals)), f"schedule {seed}: duplicated evaluations {evals}"
    kinds = " ".join(report)
    assert "checkpoint write" in kinds and "during steps" in kinds  # both kinds of kill happened
    print("\n".join(report))


def test_damaged_latest_checkpoint_falls_back(tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from preftune.training.checkpoint import latest_valid_checkpoint

    data = toy_data(tmp_path)
    out = tmp_path / "run"
    config = write_config(tmp_path, tiny_model_dir, data, out, max_steps=4, save_total_limit=3)
    assert run_until(config, out, tmp_path / "log", None) == "finished"
    newest = out / "checkpoint-4" / "model" / "trainable.safetensors"
    newest.write_bytes(newest.read_bytes()[:-10] + b"0123456789")
    assert latest_valid_checkpoint(out) == out / "checkpoint-3"
    assert "checkpoint-4 skipped: model/trainable.safetensors damaged" in caplog.text
