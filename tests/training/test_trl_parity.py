"""Parity with TRL 1.16's DPOTrainer on the same tiny model, data and settings.

Settings that make the two comparable: float32; no dropout (the tiny model has none); no shuffling
(TRL: train_sampling_strategy="sequential"; preftune: train.shuffle=false); the same batch of 4
pairs per step; AdamW with the same learning rate, no weight decay, no warmup and a linear
schedule over the same 5 steps; gradient clipping at 1.0; standard (string) data, which both
tokenize as prompt + response + EOS with the response found on token ids; a separate frozen
reference model. The first step's loss is log 2 for both and proves nothing, so the test checks
the first step's logps/chosen and logps/rejected (tokenization and log-prob computation) to 1e-5
and the loss over the first five steps (optimizer and schedule) to 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="TRL is a test-only dependency (pip install -e .[dev])")

from preftune.training.run import train  # noqa: E402

from .helpers import TOY, tiny_config, train_metrics  # noqa: E402


def run_trl(model_dir: Path, out: Path, records: list[dict]) -> list[dict]:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=4, max_steps=5, learning_rate=1e-3, lr_scheduler_type="linear",
                     warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, report_to="none", beta=0.1, use_cpu=True,
                     save_strategy="no", train_sampling_strategy="sequential", dataloader_num_workers=0, bf16=False, fp16=False,
                     optim="adamw_torch", seed=0)
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, processing_class=tok, train_dataset=datasets.Dataset.from_list(records))
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h]


def test_first_step_logps_and_five_step_losses_match_trl(tmp_path: Path, tiny_model_dir: Path) -> None:
    records = TOY[:20]
    ours = train_metrics(train(tiny_config(tmp_path, tiny_model_dir, "train.max_steps=5", "train.scheduler=linear",
                                           "reference.strategy=separate", "train.deterministic=false"), show_progress=False).output_dir)
    theirs = run_trl(tiny_model_dir, tmp_path / "trl", records)
    assert len(ours) == len(theirs) == 5
    assert ours[0]["logps/chosen"] == pytest.approx(theirs[0]["logps/chosen"], rel=1e-5)
    assert ours[0]["logps/rejected"] == pytest.approx(theirs[0]["logps/rejected"], rel=1e-5)
    ours_losses, their_losses = [m["loss"] for m in ours], [h["loss"] for h in theirs]
    assert ours_losses == pytest.approx(their_losses, abs=1e-4), json.dumps({"preftune": ours_losses, "trl": their_losses})
    assert ours_losses[-1] < ours_losses[0] - 1e-3  # training moved, so agreement at later steps means something
