"""The registry's contracts, edge by edge: registration defaults and refusals, every kind of parameter domain at its
bounds, the messages that name the loss, key and fix, and `compute_weighted` passing every setting to each component."""

from __future__ import annotations

import math

import pytest
import torch

from preftune.losses import LOSSES, NAMES, compute_loss, compute_weighted, loss_params
from preftune.losses.registry import REGISTRY, check_param, get_spec, register
from preftune.losses.types import LossOutput


@pytest.fixture()
def scratch_name():
    name = "scratch_loss_for_test"
    yield name
    REGISTRY.pop(name, None)


def _identity(x, beta, **params) -> LossOutput:
    return LossOutput(x.policy_chosen_logps * beta, x.policy_chosen_logps, x.policy_rejected_logps)


def test_register_defaults_and_refusals(scratch_name: str) -> None:
    with pytest.raises(RuntimeError, match=f"loss '{scratch_name}': register it with its formula"):
        register(scratch_name, "d", "p")
    with pytest.raises(RuntimeError, match="a reward kind from"):
        register(scratch_name, "d", "p", formula="f", reward="nonsense")
    register(scratch_name, "d", "p", formula="f")(_identity)
    spec = get_spec(scratch_name)
    assert spec.uses_reference is True and spec.default_beta == 0.1 and spec.params == {} and spec.domains == {}
    assert spec.formula == "f" and spec.reward == "log_ratio"
    assert (spec.name, spec.description, spec.paper, spec.fn) == (scratch_name, "d", "p", _identity)
    with pytest.raises(RuntimeError, match=f"loss '{scratch_name}' registered twice"):
        register(scratch_name, "d", "p", formula="f")(_identity)
    REGISTRY.pop(scratch_name)
    register(scratch_name, "d", "p", formula="f", reward="avg_logp")(_identity)
    assert get_spec(scratch_name).reward == "avg_logp"  # the reward kind given is the one kept
    REGISTRY.pop(scratch_name)
    with pytest.raises(RuntimeError, match=f"loss '{scratch_name}': every parameter needs a domain"):
        register(scratch_name, "d", "p", params={"a": 1.0})
    with pytest.raises(RuntimeError, match="every parameter needs a domain"):
        register(scratch_name, "d", "p", domains={"a": "[0, 1]"})
    register(scratch_name, "d", "p", params={"a": 1.0}, domains={"a": "[0, 1]"}, uses_reference=False, default_beta=2.0, formula="f")(_identity)
    spec = get_spec(scratch_name)
    assert spec.params == {"a": 1.0} and spec.domains == {"a": "[0, 1]"} and not spec.uses_reference and spec.default_beta == 2.0


def test_get_spec_names_the_valid_losses() -> None:
    with pytest.raises(KeyError, match=re_escape(f"unknown loss 'nope'; valid names: {', '.join(sorted(REGISTRY))}")):
        get_spec("nope")


@pytest.mark.parametrize("domain,inside,outside", [
    ("[0, 1]", [0, 1, 0.5], [-1e-9, 1 + 1e-9]),
    ("(0, 1)", [1e-9, 1 - 1e-9], [0, 1]),
    ("[0, 0.5)", [0, 0.499], [0.5, -0.1]),
    ("(0, inf)", [1e-12, 1e300], [0, -1]),
    ("(-inf, 0]", [0, -5], [1e-9]),
])
def test_interval_domains_at_their_bounds(domain: str, inside: list[float], outside: list[float]) -> None:
    for v in inside:
        check_param("l", "k", v, domain)
    for v in outside:
        with pytest.raises(ValueError, match=re_escape(f"loss 'l': params.k = {v!r} must be in {domain}")):
            check_param("l", "k", v, domain)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize("value", [True, "0.1", None, math.inf, -math.inf, math.nan])
def test_interval_domains_refuse_what_is_not_a_finite_number(value: object) -> None:
    with pytest.raises(ValueError, match=re_escape(f"loss 'l': params.k = {value!r} must be a finite number in [0, 1]")):
        check_param("l", "k", value, "[0, 1]")


def test_choice_domains_list_the_choices() -> None:
    check_param("ipo", "normalize", "tokens", "tokens|sum")
    with pytest.raises(ValueError, match=re_escape("loss 'ipo': params.normalize = 'mean' must be one of ['tokens', 'sum']")):
        check_param("ipo", "normalize", "mean", "tokens|sum")


def test_loss_params_messages_name_the_loss_the_key_and_what_it_takes() -> None:
    with pytest.raises(KeyError, match=re_escape(f"unknown loss 'nope'; valid names: {', '.join(NAMES)}")):
        loss_params("nope", {})
    with pytest.raises(ValueError, match=re_escape("loss 'dpo' has no parameter(s) ['x']; it takes none")):
        loss_params("dpo", {"x": 1})
    with pytest.raises(ValueError, match=re_escape("loss 'robust' has no parameter(s) ['x']; it takes ['label_smoothing']")):
        loss_params("robust", {"x": 1})
    with pytest.raises(ValueError, match=re_escape("loss 'robust': params.label_smoothing = 0.5 must be in")):
        loss_params("robust", {"label_smoothing": 0.5})
    with pytest.raises(ValueError, match=re_escape("loss 'kto': params.desirable_weight = -1 must be in")):
        loss_params("kto", {"desirable_weight": -1})
    assert loss_params("kto", {"undesirable_weight": 2.0}) == {"desirable_weight": 1.0, "undesirable_weight": 2.0}
    assert "kto" in LOSSES and set(NAMES) == set(LOSSES)


def _logps(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"policy_chosen_logps": -torch.rand(5, generator=g) * 40, "policy_rejected_logps": -torch.rand(5, generator=g) * 40,
            "reference_chosen_logps": -torch.rand(5, generator=g) * 40, "reference_rejected_logps": -torch.rand(5, generator=g) * 40,
            "chosen_lengths": torch.tensor([3, 9, 1, 20, 7]), "rejected_lengths": torch.tensor([11, 2, 6, 4, 30])}


def test_compute_loss_refuses_kto_and_uses_beta() -> None:
    with pytest.raises(ValueError, match=r"^kto is unpaired: call preftune.losses.kto_loss\(\.\.\.\) with per-example log-probs and labels$"):
        compute_loss("kto", **_logps())
    a, b = compute_loss("dpo", beta=0.5, **_logps()), compute_loss("dpo", **_logps())
    assert torch.allclose(a.chosen_rewards, 5 * b.chosen_rewards)  # the default β is 0.1


@pytest.mark.parametrize("settings", [{"beta": 0.3}, {"length_normalize": True}, {"reference_free": True},
                                      {"beta": 0.7, "length_normalize": True, "reference_free": True}])
def test_compute_weighted_passes_every_setting_to_each_component(settings: dict) -> None:
    x = _logps(1)
    components = [("robust", 0.5, {"label_smoothing": 0.2}), ("ipo", 2.0, {}), ("sft", 0.25, {})]
    out = compute_weighted(components, **settings, **x)
    parts = [compute_loss(n, **settings, **x, **p) for n, _, p in components]
    torch.testing.assert_close(out.losses, sum(w * p.losses for (_, w, _), p in zip(components, parts)))
    torch.testing.assert_close(out.chosen_rewards, parts[0].chosen_rewards)
    torch.testing.assert_close(out.rejected_rewards, parts[0].rejected_rewards)
    plain = compute_weighted(components, **x)
    assert not torch.allclose(out.losses, plain.losses)  # each setting changes the numbers, so passing it on is checked
    with pytest.raises(ValueError, match="^compute_weighted needs at least one component$"):
        compute_weighted([], **x)
