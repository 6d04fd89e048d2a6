"""The scoring path against sums written out here: a batch's weighted loss and every per-pair value of `loss_on_batch`,
the reference table `reference_values` stores, and the split loop `score` (means, kept per-pair values in order, the
pair indices, the per-batch callback)."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from preftune.config import LossConfig
from preftune.data.batch import collate
from preftune.errors import ConfigError
from preftune.losses import compute_loss, compute_weighted
from preftune.models.logprobs import SequenceLogps
from preftune.scoring.batches import LossFunction, loss_on_batch, reference_values, score, weighted_mean

from ..models.test_layouts import hh_pairs

BETA = 0.3


class FixedReference:
    """A reference whose log-probs are given per pair index."""

    name = "fixed"

    def __init__(self, chosen: torch.Tensor, rejected: torch.Tensor):
        self.chosen, self.rejected = chosen, rejected

    def logps(self, batch):
        return self.chosen[batch.indices], self.rejected[batch.indices]

    def as_model(self):
        return contextlib.nullcontext(None)


class NoReference(FixedReference):
    def __init__(self):
        super().__init__(torch.zeros(0), torch.zeros(0))

    def logps(self, batch):
        return None


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64, attn_implementation="sdpa").eval()


def response_logp(model, prompt: list[int], response: list[int]) -> float:
    """Σ log π(response token | everything before it), one sequence at a time, in float64."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits[:-1], -1)
    return sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(response))


def test_weighted_mean_weights_each_loss_and_divides_by_the_weights() -> None:
    losses = torch.tensor([1.0, 2.0, 4.0])
    assert float(weighted_mean(losses, torch.tensor([1.0, 0.0, 3.0]))) == pytest.approx((1.0 + 12.0) / 4.0)
    assert float(weighted_mean(losses, torch.ones(3))) == pytest.approx(7.0 / 3.0)
    assert float(weighted_mean(losses, torch.zeros(3))) == 0.0  # no weight at all: 0, not NaN
    assert float(weighted_mean(losses, torch.tensor([0.2, 0.3, 0.0]))) == pytest.approx((0.2 + 0.6) / 0.5)  # weights summing below 1


@pytest.mark.parametrize("layout", ["padded", "prefix_shared"])
def test_loss_on_batch_gives_the_dpo_loss_and_every_value_from_sums_over_response_tokens(layout, model, smol_tokenizer) -> None:
    pairs = hh_pairs(smol_tokenizer, 4)
    pairs[1] = dataclasses.replace(pairs[1], weight=3.0)
    n = len(pairs)
    indices = [3, 0, 2, 1][:n]
    batch = collate(layout, [pairs[i] for i in indices], indices, smol_tokenizer.pad_token_id)
    policy = {i: (response_logp(model, p.prompt, p.chosen), response_logp(model, p.prompt, p.rejected)) for i, p in enumerate(pairs)}
    shift = [(1.5, -2.0), (-3.0, 0.5), (2.5, 4.0), (-0.5, -6.0)]  # references near the policy, margins of both signs
    ref_c = torch.tensor([policy[i][0] + shift[i][0] for i in range(n)], dtype=torch.float64)
    ref_r = torch.tensor([policy[i][1] + shift[i][1] for i in range(n)], dtype=torch.float64)
    loss = LossFunction.from_config(LossConfig(beta=BETA))
    value, values = loss_on_batch(model, batch, FixedReference(ref_c, ref_r), loss, chunk=16)

    want: dict[str, list[float]] = {k: [] for k in ("lc", "lr", "margin", "loss", "acc", "len")}
    for i in indices:
        p = pairs[i]
        lc, lr = policy[i]
        cr, rr = BETA * (lc - float(ref_c[i])), BETA * (lr - float(ref_r[i]))
        want["lc"].append(lc), want["lr"].append(lr), want["margin"].append(cr - rr)
        want["loss"].append(-math.log(1 / (1 + math.exp(-(cr - rr)))))
        want["acc"].append(1.0 if cr > rr else 0.0)
        want["len"].append(len(p.chosen) - len(p.rejected))
    w = [pairs[i].weight for i in indices]
    assert float(value.detach()) == pytest.approx(sum(a * b for a, b in zip(w, want["loss"])) / sum(w), rel=2e-5)
    assert value.requires_grad
    close = lambda k, xs: torch.testing.assert_close(values[k].double(), torch.tensor(xs, dtype=torch.float64), rtol=1e-5, atol=5e-4)  # noqa: E731  (sums of a few hundred nats, in float32)
    close("logps/chosen", want["lc"])
    close("logps/rejected", want["lr"])
    close("ref_logps/chosen", ref_c[indices].tolist())
    close("ref_logps/rejected", ref_r[indices].tolist())
    close("logratios/chosen", [a - float(ref_c[i]) for a, i in zip(want["lc"], indices)])
    close("logratios/rejected", [a - float(ref_r[i]) for a, i in zip(want["lr"], indices)])
    close("rewards/chosen", [BETA * (a - float(ref_c[i])) for a, i in zip(want["lc"], indices)])
    close("rewards/rejected", [BETA * (a - float(ref_r[i])) for a, i in zip(want["lr"], indices)])
    close("rewards/margins", want["margin"])
    close("rewards/accuracies", want["acc"])
    close("loss", want["loss"])
    close("lengths/chosen_minus_rejected", want["len"])
    close("drift/abs_logratio", [0.5 * (abs(a - float(ref_c[i])) + abs(b - float(ref_r[i])))
                                 for a, b, i in zip(want["lc"], want["lr"], indices)])
    assert all(not v.requires_grad for v in values.values())


def test_a_layout_mask_is_refused_with_attention_that_would_misread_it(tiny_model_dir, smol_tokenizer) -> None:
    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    pairs = hh_pairs(smol_tokenizer, 2)
    batch = collate("prefix_shared", pairs, range(len(pairs)), smol_tokenizer.pad_token_id)
    with pytest.raises(ConfigError, match="train.layout: prefix_shared needs SDPA-family attention.*'eager'.*Fix"):
        loss_on_batch(eager, batch, FixedReference(torch.zeros(2), torch.zeros(2)), LossFunction.from_config(LossConfig()), chunk=16)
    padded = collate("padded", pairs, range(len(pairs)), smol_tokenizer.pad_token_id)
    loss_on_batch(eager, padded, FixedReference(torch.zeros(2), torch.zeros(2)), LossFunction.from_config(LossConfig()), chunk=16)


def test_a_reference_free_loss_has_no_reference_values(model, smol_tokenizer) -> None:
    pairs = hh_pairs(smol_tokenizer, 2)
    batch = collate("padded", pairs, range(len(pairs)), smol_tokenizer.pad_token_id)
    _, values = loss_on_batch(model, batch, NoReference(), LossFunction.from_config(LossConfig(name="simpo")), chunk=16)
    assert not any(k.startswith(("ref_logps/", "logratios/", "drift/")) for k in values)
    assert "rewards/margins" in values


def test_reference_values_are_the_references_log_probs_in_batch_order(smol_tokenizer) -> None:
    pairs = hh_pairs(smol_tokenizer, 3)
    batch = collate("padded", [pairs[2], pairs[0]], [2, 0], smol_tokenizer.pad_token_id)
    got = reference_values(FixedReference(torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-4.0, -5.0, -6.0])), batch)
    assert got["ref_logps/chosen"].tolist() == [-3.0, -1.0] and got["ref_logps/rejected"].tolist() == [-6.0, -4.0]
    with pytest.raises(ValueError, match="^reference_values needs a reference that gives log-probs$"):
        reference_values(NoReference(), batch)


def test_score_means_over_all_pairs_keeps_values_in_order_with_their_indices(smol_tokenizer) -> None:
    pairs = hh_pairs(smol_tokenizer, 5)
    pad = smol_tokenizer.pad_token_id
    batches = [collate("padded", [pairs[i] for i in idx], idx, pad) for idx in ([4, 1], [0, 3, 2])]
    value = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 10.0}
    seen: list[int] = []
    entered: list[int] = []

    @contextlib.contextmanager
    def autocast():
        entered.append(1)
        yield

    def values_of(batch):
        v = torch.tensor([value[int(i)] for i in batch.indices])
        return {"a": v, "b": 2 * v}

    means, per_pair = score(batches, values_of, keep=("a",), autocast=autocast, on_batch=seen.append)
    assert means["a"] == pytest.approx(4.0) and means["b"] == pytest.approx(8.0)
    assert per_pair["a"].tolist() == [10.0, 2.0, 1.0, 4.0, 3.0] and per_pair["index"].tolist() == [4, 1, 0, 3, 2]
    assert "b" not in per_pair and seen == [2, 3] and len(entered) == 2
    means, per_pair = score(batches, values_of)
    assert per_pair == {} and means["a"] == pytest.approx(4.0)
    doubled = lambda t: torch.cat([t, t])  # noqa: E731  (two processes with the same sums)
    assert score(batches, values_of, gather=doubled)[0]["a"] == pytest.approx(4.0)


def test_the_loss_function_hands_every_setting_of_its_section_to_the_losses() -> None:
    policy = SequenceLogps(torch.tensor([-10.0, -12.0, -20.0, -9.0], dtype=torch.float64), torch.zeros(4))
    ref = (torch.tensor([-11.0, -10.0], dtype=torch.float64), torch.tensor([-19.0, -12.0], dtype=torch.float64))
    lengths = torch.tensor([4, 8, 5, 3])
    logps = dict(policy_chosen_logps=policy.logps[:2], policy_rejected_logps=policy.logps[2:], reference_chosen_logps=ref[0],
                 reference_rejected_logps=ref[1], chosen_lengths=lengths[:2], rejected_lengths=lengths[2:])

    def run(cfg: LossConfig, **given) -> list[float]:
        return LossFunction.from_config(cfg, **given)(policy, ref, lengths, 2).losses.tolist()

    seen = set()
    for normalize in (False, True):  # ipo's per-token h reads both lengths; length_normalize divides every log-prob
        for free in (False, True):
            got = run(LossConfig(name="ipo", beta=0.2, length_normalize=normalize, reference_free=free))
            assert got == pytest.approx(compute_loss("ipo", beta=0.2, length_normalize=normalize, reference_free=free, **logps).losses.tolist())
            seen.add(tuple(round(x, 9) for x in got))
    assert len(seen) == 4  # each setting changes the loss
    cfg = LossConfig(name="ipo", beta=0.2)
    assert run(cfg, beta=0.5) == pytest.approx(compute_loss("ipo", beta=0.5, **logps).losses.tolist())
    assert run(cfg, reference_free=True) == pytest.approx(compute_loss("ipo", beta=0.2, reference_free=True, **logps).losses.tolist())
    assert run(LossConfig(name="ipo", beta=0.2, reference_free=True), reference_free=False) == pytest.approx(compute_loss("ipo", beta=0.2, **logps).losses.tolist())
    assert run(LossConfig(name="ipo", beta=0.2, reference_free=True)) != pytest.approx(run(cfg))
    both = LossConfig.model_validate({"components": [{"name": "ipo", "weight": 1.0}, {"name": "sft", "weight": 0.5}], "beta": 0.2})
    want = compute_weighted([("ipo", 1.0, {"normalize": "tokens"}), ("sft", 0.5, {})], beta=0.2, **logps).losses.tolist()
    assert run(both) == pytest.approx(want) and run(both) != pytest.approx(run(cfg))
