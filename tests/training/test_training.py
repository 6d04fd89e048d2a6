"""Training on a tiny random Llama: learning, reference strategies, accumulation, resume, config errors, trackers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from preftune.training.run import train

from .helpers import assert_reference_table, assert_trained_weights, tiny_config, train_metrics, weights


def test_loss_falls_on_a_learnable_toy_preference(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = tiny_config(tmp_path, tiny_model_dir, "train.max_steps=25", "data.eval_fraction=0.2", "train.shuffle=true", "train.learning_rate=5e-3")
    result = train(cfg, show_progress=False)
    assert result.before["eval/loss"] == pytest.approx(0.6931, abs=1e-3)
    assert result.after["eval/loss"] < 0.5 * result.before["eval/loss"]
    assert result.after["eval/rewards/accuracies"] > 0.9
    names = set(train_metrics(result.output_dir)[0])
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
            "logits/chosen", "logits/rejected", "grad_norm", "learning_rate"} <= names
    assert_trained_weights(result.output_dir, tiny_model_dir)
    assert "Trained with preftune: loss `dpo` (β = 0.1)" in (result.output_dir / "README.md").read_text()  # the model card names the loss


def test_three_reference_strategies_give_the_same_losses_at_every_step(tmp_path: Path, tiny_model_dir: Path) -> None:
    runs = {}
    for strategy in ("separate", "adapter_disabled", "precomputed"):
        cfg = tiny_config(tmp_path, tiny_model_dir, "model.lora.enabled=true", "model.lora.target_modules=all-linear",
                          f"reference.strategy={strategy}", "train.max_steps=5", "train.learning_rate=2e-2", name=strategy)
        train(cfg, show_progress=False)
        runs[strategy] = train_metrics(tmp_path / strategy)
    losses = {k: [m["loss"] for m in v] for k, v in runs.items()}
    assert losses["separate"][-1] < losses["separate"][0]  # the adapter moved, so the reference matters
    for other in ("adapter_disabled", "precomputed"):
        assert losses[other] == pytest.approx(losses["separate"], abs=1e-5), other
    assert_reference_table(tmp_path / "ref", at_least=5 * 4)  # the pairs of the 5 steps of 4


def test_precomputed_reference_is_reused_by_a_later_run(tmp_path: Path, tiny_model_dir: Path, caplog) -> None:
    import logging

    cfg = tiny_config(tmp_path, tiny_model_dir, "reference.strategy=precomputed", "train.max_steps=1")
    train(cfg, show_progress=False)
    with caplog.at_level(logging.INFO, logger="preftune.training"):
        train(cfg.model_copy(update={"output_dir": str(tmp_path / "again")}), show_progress=False)
    assert "reference: 4 of the 4 train pairs this run uses are cached" in caplog.text


def test_gradient_accumulation_4x1_equals_2x2(tmp_path: Path, tiny_model_dir: Path) -> None:
    a = train(tiny_config(tmp_path, tiny_model_dir, "train.batch_size=4", "train.grad_accum=1", "train.max_steps=3", name="a"), show_progress=False)
    b = train(tiny_config(tmp_path, tiny_model_dir, "train.batch_size=2", "train.grad_accum=2", "train.max_steps=3", name="b"), show_progress=False)
    wa, wb = weights(a.output_dir), weights(b.output_dir)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-5)
    assert [m["loss"] for m in train_metrics(a.output_dir)] == pytest.approx([m["loss"] for m in train_metrics(b.output_dir)], abs=1e-5)


def test_stop_after_step_k_and_resume_reproduces_the_uninterrupted_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    common = ("train.max_steps=6", "train.save_every=3", "train.shuffle=true")
    full = train(tiny_config(tmp_path, tiny_model_dir, *common, name="full"), show_progress=False)
    stopped = train(tiny_config(tmp_path, tiny_model_dir, *common, name="part"), callbacks=[lambda step, m: step == 3], show_progress=False)
    assert stopped.steps == 3 and (tmp_path / "part" / "checkpoint-3").is_dir() and not (tmp_path / "part" / "checkpoint-6").exists()
    resumed = train(tiny_config(tmp_path, tiny_model_dir, *common, "resume_from=auto", name="part"), show_progress=False)
    assert [m["step"] for m in resumed.history if "loss" in m] == [4, 5, 6]
    wf, wr = weights(full.output_dir), weights(resumed.output_dir)
    assert wf and all(torch.equal(wf[k], wr[k]) for k in wf)
    part, whole = train_metrics(tmp_path / "part"), train_metrics(full.output_dir)
    assert [m["step"] for m in part] == [1, 2, 3, 4, 5, 6]  # steps 1-3 from the first run, 4-6 from the resumed one, each once
    assert [m["loss"] for m in part] == pytest.approx([m["loss"] for m in whole], abs=1e-6)


def test_bad_config_key_fails_with_a_readable_message(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  max_stepz: 5\nloss:\n  name: dpp\n")
    out = subprocess.run([sys.executable, "-m", "preftune", "train", str(cfg)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "train.max_stepz: unknown key; allowed keys:" in out.stderr and "max_steps" in out.stderr
    assert "unknown loss 'dpp'; valid names:" in out.stderr


def test_help_lists_every_key_with_its_default() -> None:
    out = subprocess.run([sys.executable, "-m", "preftune", "train", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for key in ("model.name_or_path = 'smollm2-135m-instruct'", "loss.beta = None", "train.batch_size = 4", "reference.strategy = 'auto'", "report_to = []"):
        assert key in out.stdout


def test_tensorboard_and_mlflow_write_their_files(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = train(tiny_config(tmp_path, tiny_model_dir, "train.max_steps=2", "report_to=[tensorboard, mlflow]"), show_progress=False)
    assert list(result.output_dir.rglob("events.out.tfevents.*")), "TensorBoard event file"
    folders = [d for d in (result.output_dir / "mlruns").rglob("metrics") if d.is_dir()]
    logged = {str(f.relative_to(d)): f.stat().st_size for d in folders for f in d.rglob("*") if f.is_file()}
    assert {"loss", "rewards/margins"} <= set(logged) and all(logged.values()), logged  # each metric file holds values


@pytest.mark.parametrize("layout", ["prefix_shared", "packed"])
def test_training_losses_are_the_same_in_every_layout(tmp_path: Path, tiny_model_dir: Path, layout: str) -> None:
    padded = train(tiny_config(tmp_path, tiny_model_dir, "train.layout=padded", "train.max_steps=3", name="padded"), show_progress=False)
    other = train(tiny_config(tmp_path, tiny_model_dir, f"train.layout={layout}", "train.max_steps=3", name=layout), show_progress=False)
    a, b = train_metrics(padded.output_dir), train_metrics(other.output_dir)
    for key in ("loss", "logps/chosen", "logps/rejected"):
        assert [m[key] for m in b] == pytest.approx([m[key] for m in a], rel=1e-5, abs=1e-5), key
    assert b[0]["num_tokens"] < a[0]["num_tokens"]


def test_step_counts_add_up_over_an_epoch_and_the_step_callback_runs(tmp_path: Path, tiny_model_dir: Path) -> None:
    from preftune.data.prepare import prepare_data
    from preftune.models.loading import load_tokenizer

    cfg = tiny_config(tmp_path, tiny_model_dir, "train.layout=prefix_shared", "train.grad_accum=2", "train.max_steps=5")
    seen: list[int] = []
    result = train(cfg, show_progress=False, callbacks=[lambda step, metrics: seen.append(step) if "loss" in metrics else None])
    steps = train_metrics(result.output_dir)
    assert seen == [1, 2, 3, 4, 5] and [m["num_pairs"] for m in steps] == [8] * 5  # 5 steps of 2 × 4 pairs: the 40 pairs once
    pairs = prepare_data(cfg.data.settings(), load_tokenizer(str(tiny_model_dir), False), cfg.train.seed)[0].pairs
    assert sum(m["num_tokens"] for m in steps) == sum(len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)


def test_the_reference_cache_key_changes_with_every_setting_that_changes_its_numbers(tmp_path: Path, tiny_model_dir: Path) -> None:
    from preftune.training.setup import reference_cache_key

    base = tiny_config(tmp_path, tiny_model_dir)
    key = reference_cache_key(base, "m", "p")
    changes = ["model.dtype=bfloat16", "train.mixed_precision=bf16", "train.layout=padded", "train.pack_tokens=256", "train.logits_chunk=64"]
    for change in changes:
        assert reference_cache_key(tiny_config(tmp_path, tiny_model_dir, change), "m", "p") != key, change
    assert reference_cache_key(base, "m2", "p") != key and reference_cache_key(base, "m", "p2") != key
    assert reference_cache_key(tiny_config(tmp_path, tiny_model_dir, "train.max_steps=9", "train.learning_rate=1e-2"), "m", "p") == key


def test_train_reuses_the_cache_precompute_ref_made(tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from preftune.training.setup import precompute_reference

    cfg = tiny_config(tmp_path, tiny_model_dir, "reference.strategy=precomputed", "train.max_steps=1", "data.eval_fraction=0.2")
    folder = precompute_reference(cfg)
    made = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(made) == 2  # train and held-out splits
    with caplog.at_level(logging.INFO, logger="preftune.training"):
        train(cfg, show_progress=False)
    assert sorted(p.name for p in folder.glob("*.safetensors")) == made
    assert re.findall(r"reference: (\d+) of the (\d+) (\w+) pairs this run uses are cached", caplog.text) == [("4", "4", "train"), ("8", "8", "eval")]
    train(tiny_config(tmp_path, tiny_model_dir, "reference.strategy=precomputed", "train.max_steps=1", "data.eval_fraction=0.2",
                      "train.logits_chunk=64", name="other"), show_progress=False)
    assert len(list(folder.glob("*.safetensors"))) == 4  # another setting: a miss, computed and cached anew
