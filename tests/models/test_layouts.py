"""The padded, prefix-shared and packed layouts give the same log-probabilities (and gradients)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from preftune.data.batch import collate
from preftune.data.pipeline import LoadSettings, load_examples
from preftune.data.tokenize import PairTokenizer, TokenizeSettings
from preftune.models.logprobs import sequence_logps

from ..conftest import shared_file


def hh_pairs(tokenizer, n: int):
    loaded = load_examples(str(shared_file("hh-rlhf-harmless", "test.jsonl")), LoadSettings(on_error="skip"))
    tok = PairTokenizer(tokenizer, TokenizeSettings(max_length=256, max_prompt_length=128))
    return [p for p in (tok(e) for e in loaded.examples[:n]) if p is not None]


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()


@pytest.mark.parametrize("layout", ["prefix_shared", "packed"])
def test_layout_log_probs_equal_the_padded_layout(layout: str, tiny_model, smol_tokenizer) -> None:
    pairs = hh_pairs(smol_tokenizer, 8)
    pad = smol_tokenizer.pad_token_id
    with torch.no_grad():
        ref = sequence_logps(tiny_model, collate("padded", pairs, range(len(pairs)), pad)).logps
        got = sequence_logps(tiny_model, collate(layout, pairs, range(len(pairs)), pad, row_tokens=700)).logps
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)


def test_layouts_have_equal_gradients_and_compute_fewer_tokens(tiny_model, smol_tokenizer) -> None:
    pairs = hh_pairs(smol_tokenizer, 6)
    pad = smol_tokenizer.pad_token_id
    grads, tokens = {}, {}
    for layout in ("padded", "prefix_shared", "packed"):
        tiny_model.zero_grad()
        batch = collate(layout, pairs, range(len(pairs)), pad, row_tokens=900)
        sequence_logps(tiny_model, batch, chunk=64).logps.sum().backward()
        grads[layout] = tiny_model.model.embed_tokens.weight.grad.clone()
        tokens[layout] = batch.num_tokens
    for layout in ("prefix_shared", "packed"):
        torch.testing.assert_close(grads[layout], grads["padded"], rtol=1e-4, atol=1e-5)
    shared = sum(len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)
    assert tokens["prefix_shared"] == tokens["packed"] == shared
    assert tokens["padded"] == sum(2 * len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)


def test_packing_puts_several_pairs_in_a_row(smol_tokenizer) -> None:
    pairs = hh_pairs(smol_tokenizer, 8)
    batch = collate("packed", pairs, range(8), smol_tokenizer.pad_token_id, row_tokens=2048)
    assert batch.input_ids.shape[0] < 8 and batch.lengths.tolist() == [len(p.chosen) for p in pairs] + [len(p.rejected) for p in pairs]
    mask = batch.attention_mask[:, 0]
    seg = torch.full(batch.input_ids.shape, -1)
    for r in range(seg.shape[0]):  # segment id of each position: attention never crosses segments
        starts = [0] + [int(c) for c in (batch.position_ids[r, 1:] == 0).nonzero().flatten() + 1]
        for k, s in enumerate(starts):
            seg[r, s:] = k
    cross = (seg.unsqueeze(-1) != seg.unsqueeze(-2)) & mask
    assert not cross.any()
