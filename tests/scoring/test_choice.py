"""The one reference rule: every strategy with and without a named reference, an adapter policy, a kept starting
adapter, a start in memory; and the builder that turns each choice into the `Reference` it names."""

from __future__ import annotations

import pytest
import torch

from preftune.errors import ModelError
from preftune.scoring.choice import ReferenceChoice, choose_reference, make_reference
from preftune.scoring.reference import AdapterDisabledReference, NoReference, SeparateReference, StartAdapterReference


def kinds(choice: ReferenceChoice) -> tuple[str, str | None]:
    return choice.kind, choice.load


@pytest.mark.parametrize("strategy", ["separate", "precomputed", "auto"])
def test_a_named_reference_wins_over_the_start_and_an_adapter(strategy: str) -> None:
    got = choose_reference(strategy, explicit="sft-model", adapter_base="base", start="start-model")
    assert kinds(got) == ("separate", "sft-model") and got.named_by == "reference.name_or_path" and got.name == "sft-model"
    flagged = choose_reference(strategy, explicit="sft-model", named_by="--reference", start="start-model")
    assert flagged.named_by == "--reference"


def test_an_adapter_policy_scores_against_itself_with_the_adapter_off_unless_separate_is_asked() -> None:
    for strategy in ("adapter_disabled", "precomputed", "auto"):
        got = choose_reference(strategy, adapter_base="base-model", start="base-model")
        assert got.kind == "adapter_disabled" and got.name == "adapter disabled (its base: base-model)"
    assert kinds(choose_reference("separate", adapter_base="base-model", start="base-model")) == ("separate", "base-model")
    assert choose_reference("adapter_disabled", explicit="other", adapter_base="base").kind == "adapter_disabled"


def test_a_continued_adapter_is_kept_frozen_in_the_reference_when_asked() -> None:
    kept = choose_reference("adapter_disabled", adapter_base="base", start="base", start_adapter="sft-adapter", keep_start_adapter=True)
    assert kept.kind == "start_adapter"
    separate = choose_reference("separate", start="base", start_adapter="sft-adapter", keep_start_adapter=True)
    assert kinds(separate) == ("separate", "sft-adapter")  # loaded merged into its base
    assert kinds(choose_reference("separate", start="base", start_adapter="sft-adapter")) == ("separate", "base")


def test_the_start_is_the_reference_otherwise_and_auto_without_one_has_none() -> None:
    assert kinds(choose_reference("separate", start="start-model")) == ("separate", "start-model")
    assert kinds(choose_reference("precomputed", start="start-model")) == ("separate", "start-model")
    copy = torch.nn.Linear(2, 2)
    in_memory = choose_reference("separate", start=copy)
    assert in_memory.kind == "separate" and in_memory.model is copy and in_memory.named_by is None
    assert choose_reference("auto").kind == "none"
    assert choose_reference("none", explicit="x", adapter_base="b", start="s").kind == "none"
    with pytest.raises(ValueError, match="needs the policy's start"):
        choose_reference("separate")
    with pytest.raises(ValueError, match="expected one of"):
        choose_reference("sometimes", start="s")


def test_a_reference_passed_in_memory_is_named_by_its_path_or_as_passed() -> None:
    module = torch.nn.Linear(2, 2)
    got = choose_reference("auto", explicit=module, named_by="reference")
    assert got.kind == "separate" and got.model is module and got.name == "reference passed from Python"
    module.name_or_path = "my/sft"  # type: ignore[assignment]
    assert choose_reference("auto", explicit=module).name == "my/sft"


def test_each_choice_builds_the_reference_it_names(tiny_model_dir, smol_tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    from preftune.models.loading import add_lora
    from preftune.config import LoraConfig, ModelConfig

    loaded: list[str] = []
    placed: list[torch.nn.Module] = []

    def load(path: str) -> torch.nn.Module:
        loaded.append(path)
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    def place(m: torch.nn.Module) -> torch.nn.Module:
        placed.append(m)
        return m

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert isinstance(make_reference(ReferenceChoice("none"), policy, 8, load), NoReference)
    ref = make_reference(choose_reference("separate", start=str(tiny_model_dir)), policy, 8, load, place=place)
    assert isinstance(ref, SeparateReference) and loaded == [str(tiny_model_dir)] and placed == [ref.model]
    named = make_reference(choose_reference("separate", explicit=str(tiny_model_dir)), policy, 8, load, tokenizer=smol_tokenizer)
    assert isinstance(named, SeparateReference)
    lora = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ModelConfig(lora=LoraConfig(enabled=True, r=4)))
    assert type(make_reference(choose_reference("auto", adapter_base="b"), lora, 8, load)) is AdapterDisabledReference
    kept = make_reference(choose_reference("adapter_disabled", adapter_base="b", keep_start_adapter=True), lora, 8, load)
    assert isinstance(kept, StartAdapterReference)
    with pytest.raises(ValueError, match="needs the adapter policy"):
        make_reference(ReferenceChoice("adapter_disabled"), None, 8, load)


def test_a_named_reference_with_other_token_ids_is_refused_naming_its_key(tiny_model_dir) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.vocab_size += 8
    other = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ModelError, match="--reference"):
        make_reference(choose_reference("auto", explicit=other, named_by="--reference"), policy, 8, lambda p: other)


def test_a_lora_run_under_auto_scores_against_a_named_reference() -> None:
    """Training's rule is the same rule: with LoRA and `reference.name_or_path` set, `auto` uses the named model (the
    adapter turned off is the default only when none is named)."""
    from preftune.config import load_config
    from preftune.training.objectives import choose_objective
    from preftune.training.setup import reference_choice, strategy_name

    cfg = load_config(None, ["model.lora.enabled=true", "reference.name_or_path=my-sft"])
    got = reference_choice(cfg, choose_objective(cfg), lora=True)
    assert (got.kind, got.load, strategy_name(cfg, got)) == ("separate", "my-sft", "separate")
    plain = load_config(None, ["model.lora.enabled=true"])
    got = reference_choice(plain, choose_objective(plain), lora=True)
    assert (got.kind, strategy_name(plain, got)) == ("adapter_disabled", "adapter_disabled")
    sft = load_config(None, ["stage=sft", "reference.strategy=separate"])
    assert reference_choice(sft, choose_objective(sft), lora=False).kind == "none"
    pre = load_config(None, ["reference.strategy=precomputed"])
    assert strategy_name(pre, reference_choice(pre, choose_objective(pre), lora=False)) == "precomputed"
