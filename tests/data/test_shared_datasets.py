"""The four real data sets in ../shared/data load: HH directly, PandaLM and LLMBar by mapping, GSM8K by recipe."""

from __future__ import annotations

from preftune.config import DataConfig
from preftune.data.pipeline import load_examples

from ..conftest import shared_file


def test_hh_rlhf_implicit_prompts_load_and_report_the_few_broken_pairs() -> None:
    loaded = load_examples(str(shared_file("hh-rlhf-harmless", "train.jsonl")), DataConfig(on_error="skip").load_settings())
    assert loaded.format == "implicit_prompt" and loaded.n_read == 1800
    assert 1780 <= len(loaded.examples) < 1800 and set(loaded.errors) <= {"empty text", "no shared prefix"}
    assert all(e.prompt.endswith("\n\nAssistant:") for e in loaded.examples)


def test_pandalm_recipe_majority_vote_and_agreement_filter() -> None:
    path = str(shared_file("pandalm", "testset-v1.json"))
    loaded = load_examples(path, DataConfig(recipe="pandalm", on_error="skip").load_settings())
    assert loaded.n_read == 999 and loaded.removed["no majority among the votes (tie)"] > 0
    assert {round(e.confidence, 3) for e in loaded.examples} <= {0.333, 0.667, 1.0}
    unanimous = load_examples(path, DataConfig(recipe="pandalm", on_error="skip", filters=dict(min_confidence=1.0)).load_settings())
    assert 0 < len(unanimous.examples) < len(loaded.examples)


def test_llmbar_recipe_uses_the_expert_label() -> None:
    loaded = load_examples(str(shared_file("llmbar-natural", "dataset.json")), DataConfig(recipe="llmbar").load_settings())
    assert len(loaded.examples) == 100
    import json

    raw = json.loads(shared_file("llmbar-natural", "dataset.json").read_text())
    first = loaded.examples[0]
    assert first.chosen == raw[0]["output_1" if str(raw[0]["label"]) == "1" else "output_2"]


def test_gsm8k_small_edit_pairs_differ_only_in_the_final_number() -> None:
    loaded = load_examples(str(shared_file("gsm8k", "train.jsonl")), DataConfig(recipe="gsm8k_small_edit").load_settings())
    assert len(loaded.examples) == 7473
    for ex in loaded.examples[:200]:
        head_c, _, num_c = ex.chosen.rpartition("####")
        head_r, _, num_r = ex.rejected.rpartition("####")
        assert head_c == head_r and num_c != num_r
