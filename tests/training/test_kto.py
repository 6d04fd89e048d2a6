"""KTO end to end: unpaired and split-pair data, the KL reference point, every reference strategy and layout, TRL
1.16 KTOTrainer parity, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preftune.config import load_config
from preftune.data.records import PreferencePair, UnpairedExample
from preftune.data.tokenize import TokenizedPair
from preftune.data.unpaired import kl_pairs, kl_partners, split_pairs, weight_advice
from preftune.errors import ConfigError, DataError
from preftune.training.kto import summarize
from preftune.training.run import train

from ..conftest import write_jsonl
from .helpers import TOY, tiny_config, train_metrics

UNPAIRED = [{"prompt": f"Q{i}: pick the good word.", "completion": f" good{i % 3}" if i % 3 else f" bad{i % 5} bad", "label": bool(i % 3)}
            for i in range(20)]


def kto_config(tmp_path: Path, model_dir: Path, *overrides: str, name: str = "kto", records: list[dict] = UNPAIRED):
    data = write_jsonl(tmp_path / f"{name}.jsonl", records)
    return tiny_config(tmp_path, model_dir, f"data.train={data}", "loss.name=kto", *overrides, name=name)


def test_pairs_split_two_at_a_time_so_batches_hold_both_labels() -> None:
    pairs = [PreferencePair(f"p{i}", f"c{i}", f"r{i}") for i in range(5)]
    out = split_pairs(pairs)
    assert [(e.completion, e.label) for e in out] == [("c0", True), ("c1", True), ("r0", False), ("r1", False), ("c2", True), ("c3", True),
                                                      ("r2", False), ("r3", False), ("c4", True), ("r4", False)]
    kept = UnpairedExample("u", "x", False)
    assert split_pairs([kept])[0] is kept


def test_kl_partner_is_the_previous_example_in_the_batch_and_never_one_of_the_same_prompt() -> None:
    assert kl_partners([[1], [2], [3], [4], [5]], 4) == [3, 0, 1, 2, 4]  # TRL's rotation by one within each batch
    prompts = [[p] for e in split_pairs([PreferencePair(str(i), "c", "r") for i in range(6)]) for p in [int(e.prompt)]]
    for size in (2, 3, 4, 5, 6, 8):
        partners = kl_partners(prompts, size)
        assert all(prompts[i] != prompts[j] for i, j in enumerate(partners)), size
        assert all(i // size == j // size for i, j in enumerate(partners)), size  # the partner is in the same batch


def test_kl_pairs_put_the_partner_completion_after_the_prompt_within_max_length() -> None:
    pairs = [TokenizedPair([1, 2], [10, 11, 12], []), TokenizedPair([3], [20], []), TokenizedPair([4, 5, 6], [30, 31], [])]
    out = kl_pairs(pairs, 3, max_length=4)
    assert [(p.prompt, p.chosen, p.rejected) for p in out] == [([1, 2], [10, 11, 12], [30, 31]), ([3], [20], [10, 11, 12]), ([4, 5, 6], [30, 31], [20])]
    assert kl_pairs(pairs, 3, max_length=3)[1].rejected == [10, 11]


def test_weight_advice_follows_the_paper_range() -> None:
    assert weight_advice([True] * 10 + [False] * 10, 1.0, 1.0) is None
    message = weight_advice([True] * 30 + [False] * 10, 1.0, 1.0)
    assert message and "desirable_weight in [0.33, 0.44]" in message and "undesirable_weight in [2.26, 3.0]" in message
    assert weight_advice([True] * 30 + [False] * 10, 1.0, 2.5) is None


def test_summarize_gives_per_label_means_and_a_margin_only_with_both_labels() -> None:
    totals = {"loss": 0.5, "kl": 0.1, "sum/desirable": 2.0, "sum/undesirable": 1.0, "sum/rewards/chosen": 0.4, "sum/rewards/rejected": -0.3,
              "sum/logps/chosen": -20.0, "sum/logps/rejected": -15.0, "sum/logits/chosen": 6.0, "sum/logits/rejected": 1.0,
              "sum/tokens/chosen": 12.0, "sum/tokens/rejected": 4.0}
    out = summarize(totals)
    assert out["rewards/chosen"] == pytest.approx(0.2) and out["rewards/rejected"] == pytest.approx(-0.3)
    assert out["rewards/margins"] == pytest.approx(0.5) and out["logps/chosen"] == pytest.approx(-10.0) and out["logits/chosen"] == pytest.approx(0.5)
    assert not any(k.startswith("sum/") for k in out)
    only = summarize({**totals, "sum/undesirable": 0.0})
    assert "rewards/margins" not in only and "rewards/rejected" not in only


def run_trl_kto(policy_dir: Path, ref_dir: Path, out: Path, records: list[dict]) -> list[dict]:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32)
    args = KTOConfig(output_dir=str(out), per_device_train_batch_size=4, max_steps=5, learning_rate=1e-3, lr_scheduler_type="linear",
                     warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, report_to="none", beta=0.1, use_cpu=True,
                     save_strategy="no", train_sampling_strategy="sequential", dataloader_num_workers=0, optim="adamw_torch", seed=0)
    trainer = KTOTrainer(model=model, ref_model=ref, args=args, processing_class=tok, train_dataset=datasets.Dataset.from_list(records))
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h]


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """Another random tiny Llama with the same tokenizer: a policy start that differs from the reference, so the
    first step's KL estimate, rewards and loss are not trivially 0, 0 and 0.5."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(1)
    model = LlamaForCausalLM(AutoConfig.from_pretrained(tiny_model_dir))
    folder = tmp_path_factory.mktemp("tiny-llama-other")
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def test_first_steps_match_trl_kto_trainer(tmp_path: Path, tiny_model_dir: Path, other_model_dir: Path) -> None:
    """Same data (TRL's unpaired format), batch of 4 in data order, float32, AdamW, linear schedule, separate reference
    that differs from the policy's start: step 1's log-probs, KL estimate, rewards and loss agree (tokenization, KL
    pairs, formula), and the loss over five steps (optimizer, schedule)."""
    pytest.importorskip("trl", reason="TRL is a test-only dependency (pip install -e .[dev])")
    cfg = kto_config(tmp_path, other_model_dir, "train.max_steps=5", "train.scheduler=linear", "reference.strategy=separate",
                     f"reference.name_or_path={tiny_model_dir}", "train.deterministic=false")
    ours = train_metrics(train(cfg, show_progress=False).output_dir)
    theirs = run_trl_kto(other_model_dir, tiny_model_dir, tmp_path / "trl", UNPAIRED)
    assert len(ours) == len(theirs) == 5
    first, trl_first = ours[0], theirs[0]
    assert trl_first["kl"] > 0.05  # a real estimate, not the clamp at 0
    for key in ("logps/chosen", "logps/rejected"):
        assert first[key] == pytest.approx(trl_first[key], rel=1e-5), key
    for key in ("kl", "rewards/chosen", "rewards/rejected", "loss"):
        assert first[key] == pytest.approx(trl_first[key], abs=1e-3), (key, first[key], trl_first[key])
    ours_losses, their_losses = [m["loss"] for m in ours], [h["loss"] for h in theirs]
    assert ours_losses == pytest.approx(their_losses, abs=1e-4), json.dumps({"preftune": ours_losses, "trl": their_losses})
    assert ours_losses[-1] < ours_losses[0] - 5e-3


@pytest.mark.parametrize("layout", ["prefix_shared", "packed"])
def test_kto_metrics_are_the_same_in_every_layout(tmp_path: Path, tiny_model_dir: Path, other_model_dir: Path, layout: str) -> None:
    common = ("train.max_steps=3", "reference.strategy=separate", f"reference.name_or_path={tiny_model_dir}")
    a = train_metrics(train(kto_config(tmp_path, other_model_dir, *common, "train.layout=padded", name="padded"), show_progress=False).output_dir)
    b = train_metrics(train(kto_config(tmp_path, other_model_dir, *common, f"train.layout={layout}", name=layout), show_progress=False).output_dir)
    assert a[0]["kl"] > 0.01
    for key in ("loss", "kl", "logps/chosen", "logps/rejected", "rewards/chosen"):
        assert [m[key] for m in b] == pytest.approx([m[key] for m in a], rel=1e-5, abs=1e-5), key


@pytest.mark.parametrize("strategy,lora", [("separate", False), ("precomputed", False), ("adapter_disabled", True), ("precomputed", True)])
def test_every_reference_strategy_starts_at_the_reference_and_trains(tmp_path: Path, tiny_model_dir: Path, strategy: str, lora: bool) -> None:
    """At step 1 the policy is its reference: KL 0, rewards 0, loss (λ_D + λ_U)/2-weighted 1 − σ(0) = 0.5; then it learns
    (the desirable rewards rise above the undesirable ones)."""
    cfg = kto_config(tmp_path, tiny_model_dir, f"reference.strategy={strategy}", f"model.lora.enabled={str(lora).lower()}",
                     "train.max_steps=8", "train.learning_rate=2e-2" if lora else "train.learning_rate=2e-3", "data.eval_fraction=0.2",
                     records=TOY[:20])
    result = train(cfg, show_progress=False)
    step1 = next(m for m in result.history if "loss" in m)
    assert step1["loss"] == pytest.approx(0.5, abs=1e-6) and step1["kl"] == pytest.approx(0.0, abs=1e-6)
    assert step1["rewards/chosen"] == pytest.approx(0.0, abs=1e-6) and step1["rewards/rejected"] == pytest.approx(0.0, abs=1e-6)
    assert result.before["eval/loss"] == pytest.approx(0.5, abs=1e-6)
    assert result.after["eval/rewards/margins"] > result.before["eval/rewards/margins"] + 1e-3
    assert {"eval/kl", "eval/rewards/chosen", "eval/logps/rejected", "eval/logits/chosen"} <= set(result.after)


def test_paired_data_trains_kto_as_desirable_and_undesirable_examples(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = train(kto_config(tmp_path, tiny_model_dir, "train.max_steps=6", records=TOY[:20]), show_progress=False)
    history = [m for m in result.history if "loss" in m]
    assert all(m["num_desirable"] == 2 and m["num_undesirable"] == 2 for m in history)  # 2 pairs a batch of 4
    assert history[-1]["rewards/margins"] > 0.01 and history[-1]["loss"] < history[0]["loss"]


def test_a_kto_run_is_evaluated_on_pairs_by_its_implicit_rewards(tmp_path: Path, tiny_model_dir: Path) -> None:
    import preftune

    result = train(kto_config(tmp_path, tiny_model_dir, "train.max_steps=4", records=TOY[:20]), show_progress=False)
    data = write_jsonl(tmp_path / "pairs.jsonl", TOY[20:28])
    out = preftune.evaluate(str(result.output_dir), str(data), progress=False)
    p = out["preference"]
    assert p["pairs"] == 8 and (p["rewards/accuracies"] * 16).is_integer()  # 8 pairs, ties counting one half
    assert out["loss"] == "kto" and out["beta"] == 0.1
    assert p["rewards/chosen"] == pytest.approx(0.1 * p["logratios/chosen"], rel=1e-5)  # KTO's reward: β·(log π − log πref)
    assert p["rewards/margins"] == pytest.approx(p["rewards/chosen"] - p["rewards/rejected"], rel=1e-5) and abs(p["rewards/margins"]) > 1e-4


@pytest.mark.parametrize("overrides,message", [
    (["train.batch_size=1"], "train.batch_size must be at least 2"),
    (["loss.reference_free=true"], "reference_free is not available"),
    (["loss.params={lambda_: 1}"], "no parameter(s) ['lambda_']"),
    (["loss.components=[{name: dpo}, {name: kto}]"], "cannot be a component"),
    (["reference.strategy=none"], "reference.strategy none needs a reference-free loss"),
])
def test_kto_settings_that_cannot_work_are_refused_at_load(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as e:
        load_config(None, ["loss.name=kto", *overrides])
    assert message in str(e.value)


def test_kto_on_sft_data_without_labels_is_refused_naming_the_fix(tmp_path: Path, tiny_model_dir: Path) -> None:
    records = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(12)]
    with pytest.raises(DataError, match="no desirable/undesirable labels"):
        train(kto_config(tmp_path, tiny_model_dir, records=records), show_progress=False)
