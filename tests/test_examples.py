"""Every example config loads and validates as shipped (a renamed key or a bad value fails here, not for a user)."""

from __future__ import annotations

from pathlib import Path

import pytest

from preftune.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_config_loads(name: str) -> None:
    load_config(str(EXAMPLES / name))


def test_iterate_example_follows_iterative_rpo() -> None:
    it = load_config(str(EXAMPLES / "iterate_arithmetic.yaml"))
    assert (it.loss.name, it.iterate.reference, it.iterate.round_type) == ("rpo", "previous", "preference")
    assert it.iterate.pair_strategies == ["correct_incorrect"] and it.iterate.num_eval_prompts >= 300
    assert it.iterate.sample_cap() > it.iterate.samples_per_prompt and it.iterate.eval_judge is not None
