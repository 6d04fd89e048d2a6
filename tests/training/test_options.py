"""Early stopping, continuing an existing adapter, the QLoRA guard, and `preftune precompute-ref`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from preftune.errors import ModelError
from preftune.models.loading import load_model
from preftune.training.run import train

from .helpers import TOY, assert_reference_table, tiny_config, weights


def test_early_stopping_when_held_out_margins_stop_rising(tmp_path: Path, tiny_model_dir: Path) -> None:
    # a zero learning rate keeps the held-out margin flat at 0: patience 2 stops after the third evaluation
    cfg = tiny_config(tmp_path, tiny_model_dir, "train.max_steps=20", "train.eval_every=1", "data.eval_fraction=0.2",
                      "train.learning_rate=1e-12", "train.early_stopping_patience=2", "train.early_stopping_min_delta=1e-6")
    result = train(cfg, show_progress=False)
    assert result.stopped_early and result.steps == 3


def test_training_continues_an_existing_adapter(tmp_path: Path, tiny_model_dir: Path) -> None:
    first = train(tiny_config(tmp_path, tiny_model_dir, "model.lora.enabled=true", "train.max_steps=2", "train.learning_rate=1e-2", name="first"), show_progress=False)
    cfg = tiny_config(tmp_path, tiny_model_dir, "model.lora.enabled=true", f"model.lora.adapter_path={first.output_dir / 'model'}")
    model = load_model(cfg.model)
    loaded = {n: p.detach() for n, p in model.named_parameters() if "lora_B" in n and p.requires_grad}
    b_saved = [v for k, v in weights(first.output_dir).items() if "lora_B" in k]
    assert b_saved and all(v.abs().sum() > 0 for v in b_saved), "the first run trained lora_B away from its zero start"
    assert len(loaded) == len(b_saved)
    assert sorted(float(v.abs().sum()) for v in b_saved) == pytest.approx(sorted(float(p.abs().sum()) for p in loaded.values()))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the guard is for machines without a GPU")
def test_qlora_without_gpu_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = tiny_config(tmp_path, tiny_model_dir, "model.quantize_4bit=true")
    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        load_model(cfg.model)


def test_precompute_ref_cli_writes_the_cache(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = tiny_config(tmp_path, tiny_model_dir)
    path = tmp_path / "cfg.yaml"
    from preftune.training.outputs import write_config

    write_config(cfg, path)
    out = subprocess.run([sys.executable, "-m", "preftune", "precompute-ref", str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert_reference_table(tmp_path / "ref", at_least=40)  # the whole split of the 40 toy pairs
    bad = subprocess.run([sys.executable, "-m", "preftune", "precompute-ref", str(path), "loss.name=simpo"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "reference-free" in bad.stderr


@pytest.mark.parametrize("strategy", ["separate", "precomputed"])
def test_bf16_mixed_precision_runs_the_reference_in_the_same_precision(tmp_path: Path, tiny_model_dir: Path, strategy: str) -> None:
    # at step 1 the policy equals the reference: computed in the same precision, every margin is exactly 0 and the
    # loss exactly log 2; a float32 reference against a bf16-autocast policy gives margins of the order of bf16 error
    cfg = tiny_config(tmp_path, tiny_model_dir, "train.mixed_precision=bf16", f"reference.strategy={strategy}", "train.max_steps=1",
                      "data.eval_fraction=0.2", "report=false")
    result = train(cfg, show_progress=False)
    assert result.before["eval/rewards/margins"] == 0.0
    assert result.last["rewards/margins"] == 0.0 and result.last["loss"] == pytest.approx(0.6931471805599453, abs=1e-7)


@pytest.mark.parametrize("strategy", ["adapter_disabled", "separate", "precomputed"])
def test_continuing_an_adapter_starts_at_log2_with_zero_rewards(strategy: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    """The reference of a continued adapter is that adapter, frozen (the SFT model), so step 1 has loss log 2 and
    rewards 0 for every reference strategy; with reference.start_adapter: base it is the base, and they are not."""
    first = train(tiny_config(tmp_path, tiny_model_dir, "model.lora.enabled=true", "train.max_steps=3", "train.learning_rate=5e-2", name="sft"),
                  show_progress=False)
    adapter = first.output_dir / "model"
    cont = ["model.lora.enabled=true", f"model.lora.adapter_path={adapter}", f"reference.strategy={strategy}", "train.max_steps=2",
            "train.learning_rate=5e-2"]
    step1 = train(tiny_config(tmp_path, tiny_model_dir, *cont, name=f"cont-{strategy}"), show_progress=False).history[0]
    assert step1["loss"] == pytest.approx(0.6931471805599453, abs=1e-6)
    assert step1["rewards/chosen"] == pytest.approx(0.0, abs=1e-6) and step1["rewards/rejected"] == pytest.approx(0.0, abs=1e-6)
    base = train(tiny_config(tmp_path, tiny_model_dir, *cont, "reference.start_adapter=base", name=f"base-{strategy}"), show_progress=False)
    assert abs(base.history[0]["rewards/margins"]) > 1e-4  # the base model is another reference: the adapter's margin shows at once
    saved = weights(Path(tmp_path / f"cont-{strategy}"))
    assert saved and not any("reference" in k for k in saved)  # only the trained adapter is saved


def test_a_peft_model_passed_from_python_is_its_own_reference(tmp_path: Path, tiny_model_dir: Path, smol_tokenizer) -> None:
    import preftune
    from peft import PeftModel

    from preftune.config import ModelConfig

    first = train(tiny_config(tmp_path, tiny_model_dir, "model.lora.enabled=true", "train.max_steps=3", "train.learning_rate=5e-2", name="sft"),
                  show_progress=False)
    for strategy in ("auto", "separate", "precomputed"):
        base = load_model(ModelConfig(name_or_path=str(tiny_model_dir)), trainable=False)
        peft_model = PeftModel.from_pretrained(base, str(first.output_dir / "model"), is_trainable=True)
        result = preftune.train({"train": {"max_steps": 1, "batch_size": 4, "learning_rate": 5e-2}, "data": {"eval_fraction": 0},
                                 "reference": {"strategy": strategy}, "report": False},
                                model=peft_model, tokenizer=smol_tokenizer, train_data=TOY, output_dir=None, progress=False)
        assert result.history[0]["loss"] == pytest.approx(0.6931471805599453, abs=1e-6), strategy


@pytest.mark.parametrize("lora", [True, False])
def test_a_run_folder_as_the_start_model_is_that_runs_trained_model_and_reference(lora: bool, tmp_path: Path, tiny_model_dir: Path) -> None:
    """Chaining stages: model.name_or_path = an earlier run's folder (its LoRA adapter merged into its base) is where
    the policy starts and what the reference is, so the next run's held-out numbers before training are the first
    run's after, and its first step is log 2."""
    from ..conftest import write_jsonl
    from .helpers import TOY

    held = write_jsonl(tmp_path / "held.jsonl", TOY[:8])
    first = train(tiny_config(tmp_path, tiny_model_dir, "model.lora.enabled=true", "train.max_steps=3", "train.learning_rate=5e-2",
                              f"data.eval={held}", name="first"), show_progress=False)
    second = train(tiny_config(tmp_path, tiny_model_dir, f"model.name_or_path={first.output_dir}", f"model.lora.enabled={str(lora).lower()}",
                               f"data.eval={held}", "train.max_steps=1", name="second"), show_progress=False)
    assert second.before["eval/logps/chosen"] == pytest.approx(first.after["eval/logps/chosen"], rel=1e-5)
    import preftune

    again = preftune.evaluate(second.output_dir, str(held))["preference"]  # its saved model names the right base (the first run's model)
    assert again["logps/chosen"] == pytest.approx(second.after["eval/logps/chosen"], rel=1e-5)
    assert second.before["eval/rewards/margins"] == 0.0 and second.history[1]["loss"] == pytest.approx(0.6931471805599453, abs=1e-6)
