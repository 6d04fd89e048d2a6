"""Every loss against its paper's formula in float64, on random and extreme inputs."""

from __future__ import annotations

import math

import pytest
import torch

from preftune.losses import LOSSES, REGISTRY, compute_loss, compute_weighted, kto_loss

from . import reference_formulas as ref

PAIRWISE = sorted(n for n in REGISTRY if n not in ("aot", "aot_pair"))
SIGMOID_LOSSES = ["dpo", "cdpo", "robust", "dpop", "exo_pair", "discopop", "aot", "aot_pair"]


def random_inputs(b: int, scale: float, seed: int, lengths: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lo = lambda: -torch.rand(b, generator=g, dtype=torch.float64) * scale - 0.01  # noqa: E731 (log-probs < 0)
    return dict(policy_chosen_logps=lo(), policy_rejected_logps=lo(), reference_chosen_logps=lo(), reference_rejected_logps=lo(),
                chosen_lengths=torch.randint(1, 60, (b,), generator=g).double(), rejected_lengths=torch.randint(1, 60, (b,), generator=g).double())


def params_for(name: str) -> dict:
    return dict(REGISTRY[name].params)


def expected(name: str, x: dict[str, torch.Tensor], beta: float) -> list[float]:
    cols = [x[k].tolist() for k in ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps",
                                     "reference_rejected_logps", "chosen_lengths", "rejected_lengths")]
    if name in ("aot", "aot_pair"):
        return ref.sorted_pair_losses(name, *cols[:4], beta, params_for(name))
    return [ref.pair_loss(name, *row, beta, params_for(name)) for row in zip(*cols)]


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("scale", [5.0, 200.0, 1000.0])
def test_loss_matches_paper_formula_in_float64(name: str, scale: float) -> None:
    beta = REGISTRY[name].default_beta
    x = random_inputs(32, scale, seed=int(scale) + len(name))
    out = compute_loss(name, beta=beta, **x)
    want = expected(name, x, beta)
    got = out.losses.tolist()
    assert len(got) == len(want) == 32
    compared = 0
    for g, w in zip(got, want):
        assert math.isfinite(g), f"{name}: non-finite loss {g} at scale {scale}"
        if math.isinf(w):
            continue  # the plain-formula reference overflows in float64 here; preftune's stable form is checked finite above
        assert g == pytest.approx(w, rel=1e-6, abs=1e-9), name
        compared += 1
    assert compared >= 16, f"{name}: only {compared} of 32 pairs had a finite reference value"
    rw = [ref.rewards(name, *row, beta) for row in zip(*(x[k].tolist() for k in x))]
    assert out.chosen_rewards.tolist() == pytest.approx([r[0] for r in rw], rel=1e-6, abs=1e-9)
    assert out.rejected_rewards.tolist() == pytest.approx([r[1] for r in rw], rel=1e-6, abs=1e-9)
    assert not out.chosen_rewards.requires_grad


@pytest.mark.parametrize("name", ["dpo", "cdpo", "robust", "hinge", "dpop", "bco_pair", "nca_pair", "discopop", "apo_zero", "exo_pair"])
def test_extreme_log_ratios_of_plus_minus_1e3_stay_finite(name: str) -> None:
    big = torch.tensor([1e3, -1e3, 1e3, -1e3], dtype=torch.float64)
    zero = torch.zeros(4, dtype=torch.float64)
    out = compute_loss(name, policy_chosen_logps=big, policy_rejected_logps=-big, reference_chosen_logps=zero,
                       reference_rejected_logps=zero, chosen_lengths=torch.ones(4), rejected_lengths=torch.ones(4))
    assert torch.isfinite(out.losses).all(), out.losses


@pytest.mark.parametrize("normalize", ["tokens", "sum"])
def test_ipo_offers_token_average_and_paper_sum(normalize: str) -> None:
    x = random_inputs(16, 30.0, seed=3)
    out = compute_loss("ipo", beta=0.1, normalize=normalize, **x)
    p = {"normalize": normalize}
    cols = [x[k].tolist() for k in x]
    want = [ref.pair_loss("ipo", *row, 0.1, p) for row in zip(*cols)]
    assert out.losses.tolist() == pytest.approx(want, rel=1e-6)


def test_length_normalization_divides_every_logp_by_its_length() -> None:
    x = random_inputs(8, 50.0, seed=4)
    normed = compute_loss("dpo", length_normalize=True, **x)
    manual = {k: v for k, v in x.items()}
    for side, lengths in (("chosen", "chosen_lengths"), ("rejected", "rejected_lengths")):
        manual[f"policy_{side}_logps"] = x[f"policy_{side}_logps"] / x[lengths]
        manual[f"reference_{side}_logps"] = x[f"reference_{side}_logps"] / x[lengths]
    plain = compute_loss("dpo", **manual)
    torch.testing.assert_close(normed.losses, plain.losses)


def test_reference_free_uses_a_uniform_reference() -> None:
    x = random_inputs(8, 20.0, seed=5)
    out = compute_loss("dpo", reference_free=True, **x)
    want = [-ref.log_sigmoid(0.1 * (a - b)) for a, b in zip(x["policy_chosen_logps"].tolist(), x["policy_rejected_logps"].tolist())]
    assert out.losses.tolist() == pytest.approx(want, rel=1e-9)


def test_weighted_sum_of_losses_adds_components() -> None:
    x = random_inputs(8, 20.0, seed=6)
    both = compute_weighted([("dpo", 1.0, {}), ("sft", 0.2, {})], **x)
    dpo, sft = compute_loss("dpo", **x), compute_loss("sft", **x)
    torch.testing.assert_close(both.losses, dpo.losses + 0.2 * sft.losses)
    torch.testing.assert_close(both.chosen_rewards, dpo.chosen_rewards)


def test_kto_matches_paper_formula() -> None:
    g = torch.Generator().manual_seed(7)
    pl, rl, pkl, rkl = (-torch.rand(12, generator=g, dtype=torch.float64) * 40 for _ in range(4))
    labels = torch.tensor([True, False] * 6)
    out = kto_loss(pl, rl, labels, pkl, rkl, beta=0.1, desirable_weight=1.0, undesirable_weight=1.33)
    want = ref.kto(pl.tolist(), rl.tolist(), labels.tolist(), pkl.tolist(), rkl.tolist(), 0.1, 1.0, 1.33)
    assert out.losses.tolist() == pytest.approx(want, rel=1e-6)


def test_registry_lists_every_variant_with_description_and_paper() -> None:
    wanted = {"dpo", "cdpo", "robust", "ipo", "hinge", "dpop", "simpo", "orpo", "rpo", "kto", "bco_pair", "exo_pair",
              "nca_pair", "sppo_hard", "apo_zero", "apo_down", "aot", "aot_pair", "discopop"}
    assert wanted <= set(LOSSES)
    for name, text in LOSSES.items():
        assert "[" in text and "]" in text and len(text) > 30, name


def test_unknown_name_and_unknown_parameter_are_rejected_with_valid_names() -> None:
    x = random_inputs(2, 1.0, seed=0)
    with pytest.raises(KeyError, match="valid names: .*dpo"):
        compute_loss("dpp", **x)
    with pytest.raises(ValueError, match="takes \\['lambda_'\\]"):
        compute_loss("dpop", lamda=3, **x)


def test_reference_loss_without_reference_is_an_error() -> None:
    x = random_inputs(2, 1.0, seed=0)
    with pytest.raises(ValueError, match="needs reference"):
        compute_loss("dpo", policy_chosen_logps=x["policy_chosen_logps"], policy_rejected_logps=x["policy_rejected_logps"])


def test_registry_queries_cover_every_loss_and_kto() -> None:
    from preftune.losses import NAMES, default_beta, is_unpaired, uses_reference

    assert NAMES == tuple(sorted([*REGISTRY, "kto"]))
    assert [n for n in NAMES if is_unpaired(n)] == ["kto"]
    assert {n for n in NAMES if not uses_reference(n)} == {"simpo", "orpo"}
    assert default_beta("simpo") == 2.0 and default_beta("kto") == 0.1 and default_beta("dpo") == 0.1
    assert all(default_beta(n) == REGISTRY[n].default_beta for n in REGISTRY)


def test_kto_against_a_positive_reference_point_with_both_weights() -> None:
    """z₀ > 0 (so its sign and the clamp matter), λ_U ≠ λ_D, β ≠ 0.1: each example's loss, the rewards and z₀ itself."""
    from preftune.losses import kto_reference_point

    pl, rl = torch.tensor([-10.0, -20.0, -5.0, -8.0]), torch.tensor([-12.0, -18.0, -6.0, -8.5])
    pkl, rkl = torch.tensor([-30.0, -25.0, -40.0, -35.0]), torch.tensor([-31.0, -27.0, -40.5, -36.0])
    labels = torch.tensor([True, False, True, False])
    out = kto_loss(pl, rl, labels, pkl, rkl, beta=0.5, desirable_weight=1.0, undesirable_weight=1.5)
    z = (1.0 + 2.0 + 0.5 + 1.0) / 4
    r = [2.0, -2.0, 1.0, 0.5]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want = [1 - sig(0.5 * (r[0] - z)), 1.5 * (1 - sig(0.5 * (z - r[1]))), 1 - sig(0.5 * (r[2] - z)), 1.5 * (1 - sig(0.5 * (z - r[3])))]
    assert out.losses.tolist() == pytest.approx(want, rel=1e-6)
    assert out.rewards.tolist() == pytest.approx([0.5 * v for v in r], rel=1e-6) and not out.rewards.requires_grad
    assert float(out.kl) == pytest.approx(z, rel=1e-6)
    assert float(kto_reference_point(pkl, rkl)) == pytest.approx(z, rel=1e-6)
    assert float(kto_reference_point(rkl, pkl)) == 0.0  # a negative mean log-ratio is clamped at 0
    given = kto_loss(pl, rl, labels, pkl, rkl, beta=0.5, kl=torch.tensor(3.0))
    assert float(given.kl) == 3.0 and given.losses[0].item() == pytest.approx(1 - sig(0.5 * (r[0] - 3.0)), rel=1e-6)


NON_DEFAULT = {  # a value inside each parameter's domain other than its default, so every term of a formula is exercised
    "cdpo": {"label_smoothing": 0.25}, "robust": {"label_smoothing": 0.3}, "ipo": {"normalize": "sum"}, "dpop": {"lambda_": 5.0},
    "rpo": {"alpha": 0.3}, "simpo": {"gamma_beta_ratio": 1.3, "label_smoothing": 0.2}, "orpo": {"lambda_": 0.7},
    "exo_pair": {"label_smoothing": 0.1}, "aot": {"label_smoothing": 0.2}, "aot_pair": {"label_smoothing": 0.35}, "discopop": {"tau": 0.5},
    "f_dpo": {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3},
}


@pytest.mark.parametrize("divergence", ["forward_kl", "js_divergence", "alpha_divergence"])
@pytest.mark.parametrize("alpha", [0.3, 1.0, 1.7])
def test_f_dpo_with_each_divergence_matches_the_formula(divergence: str, alpha: float) -> None:
    x = random_inputs(32, 3.0, seed=5)
    params = {"f_divergence_type": divergence, "f_alpha_divergence_coef": alpha}
    got = compute_loss("f_dpo", beta=0.37, **params, **x).losses.tolist()
    cols = [x[k].tolist() for k in ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps",
                                     "reference_rejected_logps", "chosen_lengths", "rejected_lengths")]
    assert got == pytest.approx([ref.pair_loss("f_dpo", *row, 0.37, params) for row in zip(*cols)], rel=1e-6, abs=1e-9)
    dpo = compute_loss("dpo", beta=0.37, **x).losses.tolist()
    assert (got == pytest.approx(dpo, rel=1e-9)) is (divergence == "alpha_divergence" and alpha == 1.0)  # α = 1 is reverse KL


def test_every_parameter_has_a_non_default_case() -> None:
    assert {n for n in REGISTRY if REGISTRY[n].params} == set(NON_DEFAULT)
    for name, params in NON_DEFAULT.items():
        assert all(params[k] != REGISTRY[name].params[k] for k in REGISTRY[name].params), name


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_non_default_parameters_and_beta_match_the_formula(name: str) -> None:
    """β and every parameter away from their defaults (label smoothing ε of simpo, aot and aot_pair included), against
    the independent float64 formulas."""
    beta, params = 0.37, NON_DEFAULT[name]
    x = random_inputs(32, 20.0, seed=11 + len(name))
    got = compute_loss(name, beta=beta, **params, **x).losses.tolist()
    cols = [x[k].tolist() for k in ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps",
                                     "reference_rejected_logps", "chosen_lengths", "rejected_lengths")]
    if name in ("aot", "aot_pair"):
        want = ref.sorted_pair_losses(name, *cols[:4], beta, params)
    else:
        want = [ref.pair_loss(name, *row, beta, params) for row in zip(*cols)]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9)
    default = compute_loss(name, beta=beta, **x).losses.tolist()
    assert got != pytest.approx(default, rel=1e-6)  # the parameter changed the loss: it is not ignored


def test_a_reference_loss_given_only_one_sides_reference_is_an_error() -> None:
    x = random_inputs(4, 5.0, seed=2)
    for missing in ("reference_chosen_logps", "reference_rejected_logps"):
        with pytest.raises(ValueError, match="^loss 'dpo' needs reference log-probs"):
            compute_loss("dpo", **{**x, missing: None})
