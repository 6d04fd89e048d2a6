"""The documented defaults of every loss, pinned: β and each parameter as the papers, TRL and the loss reference give
them. Changing a default in the registry fails here, so the change is made on purpose (and the docs regenerated)."""

from __future__ import annotations

import pytest

from preftune.losses import NAMES, default_beta, loss_params, uses_reference

DOCUMENTED = {  # name: (β, parameters, needs a reference)
    "dpo": (0.1, {}, True),
    "cdpo": (0.1, {"label_smoothing": 0.1}, True),
    "robust": (0.1, {"label_smoothing": 0.1}, True),
    "ipo": (0.1, {"normalize": "tokens"}, True),
    "hinge": (0.1, {}, True),
    "dpop": (0.1, {"lambda_": 50.0}, True),
    "rpo": (0.1, {"alpha": 1.0}, True),
    "sft": (0.1, {}, True),
    "simpo": (2.0, {"gamma_beta_ratio": 0.5, "label_smoothing": 0.0}, False),
    "orpo": (0.1, {"lambda_": 0.1}, False),
    "bco_pair": (0.1, {}, True),
    "exo_pair": (0.1, {"label_smoothing": 1e-3}, True),
    "nca_pair": (0.1, {}, True),
    "sppo_hard": (0.1, {}, True),
    "apo_zero": (0.1, {}, True),
    "apo_down": (0.1, {}, True),
    "aot": (0.1, {"label_smoothing": 0.0}, True),
    "aot_pair": (0.1, {"label_smoothing": 0.0}, True),
    "discopop": (0.1, {"tau": 0.05}, True),
    "sigmoid_norm": (0.1, {}, True),
    "f_dpo": (0.1, {"f_divergence_type": "reverse_kl", "f_alpha_divergence_coef": 0.5}, True),  # TRL 1.16's defaults
    "kto": (0.1, {"desirable_weight": 1.0, "undesirable_weight": 1.0}, True),
}


def test_every_registered_loss_has_its_documented_defaults_pinned() -> None:
    assert set(DOCUMENTED) == set(NAMES)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_defaults(name: str) -> None:
    beta, params, reference = DOCUMENTED[name]
    assert default_beta(name) == beta
    assert loss_params(name, {}) == params
    assert uses_reference(name) is reference


def test_the_config_default_beta_is_the_losses_own() -> None:
    from preftune.config import load_config

    assert load_config(None).loss.resolved_beta() == 0.1
    assert load_config(None, ["loss.name=simpo", "reference.strategy=none"]).loss.resolved_beta() == 2.0
