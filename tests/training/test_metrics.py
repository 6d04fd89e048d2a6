"""The metric accumulator: means of per-pair values, sums of totals, one device-to-host transfer per reduce; and, on a
CUDA GPU, a training micro-batch that never waits on the device."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from preftune.config import LossConfig
from preftune.data.batch import collate
from preftune.scoring.batches import LossFunction, loss_on_batch
from preftune.scoring.metrics import MetricAccumulator
from preftune.scoring.reference import PrecomputedReference

from ..models.test_layouts import hh_pairs


def test_reduce_gives_means_totals_and_the_pair_count() -> None:
    acc = MetricAccumulator()
    acc.add({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0, 4.0])}, keep=("a",))
    acc.add_total("tokens", torch.tensor(10))
    acc.add({"a": torch.tensor([6.0]), "b": torch.tensor([2.0])}, keep=("a",))
    acc.add_total("tokens", torch.tensor(5))
    assert acc.reduce(None, count_key="num_pairs") == {"a": 3.0, "b": 2.0, "tokens": 15.0, "num_pairs": 3.0}
    assert acc.reduce(None) == {"a": 3.0, "b": 2.0, "tokens": 15.0}
    assert torch.cat(acc.per_pair["a"]).tolist() == [1.0, 2.0, 6.0] and "b" not in acc.per_pair


def test_reduce_sums_over_processes_through_gather() -> None:
    acc = MetricAccumulator()
    acc.add({"a": torch.tensor([1.0, 3.0])})
    acc.add_total("tokens", torch.tensor(7))
    two_processes = lambda t: torch.cat([t, t + torch.tensor([[2.0, 1.0, 0.0]], dtype=t.dtype)])  # noqa: E731  (sum a, tokens, count)
    assert acc.reduce(two_processes, count_key="num_pairs") == {"a": 2.5, "tokens": 15.0, "num_pairs": 4.0}


def test_an_empty_accumulator_reduces_to_nothing() -> None:
    assert MetricAccumulator().reduce(None) == {}


@pytest.mark.cuda
def test_a_micro_batch_never_waits_on_the_gpu(tiny_model_dir, smol_tokenizer) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").cuda()
    pairs = hh_pairs(smol_tokenizer, 6)
    reference = PrecomputedReference(torch.zeros(len(pairs)) - 50.0, torch.zeros(len(pairs)) - 60.0)
    acc = MetricAccumulator()
    for layout in ("prefix_shared", "packed"):  # the padded layout's 2-D mask goes through transformers' own mask code
        batch = collate(layout, pairs, list(range(len(pairs))), smol_tokenizer.pad_token_id).to("cuda")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss, values = loss_on_batch(model, batch, reference, LossFunction.from_config(LossConfig()), chunk=64)
            loss.backward()
            acc.add(values)
            acc.add_total("num_tokens", batch.token_count())
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert acc.reduce(None, count_key="num_pairs")["num_pairs"] == 2 * len(pairs)
