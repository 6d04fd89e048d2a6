"""The padded, prefix-shared and packed layouts give the same log-probabilities (and gradients)."""

from __future__ import annotations

import collections

import pytest
import torch
from transformers import AutoModelForCausalLM

from preftune.config import DataConfig
from preftune.data.batch import collate
from preftune.data.pipeline import load_examples
from preftune.data.tokenize import PairTokenizer
from preftune.models.logprobs import sequence_logps

from ..conftest import has_cpp_compiler, shared_file


def hh_pairs(tokenizer, n: int):
    loaded = load_examples(str(shared_file("hh-rlhf-harmless", "test.jsonl")), DataConfig(on_error="skip").load_settings())
    tok = PairTokenizer(tokenizer, DataConfig(max_length=256, max_prompt_length=128).tokenize_settings())
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
        tokens[layout] = int(batch.token_count())
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


def _flex_supported() -> bool:
    import importlib.util

    if importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
        return False
    return torch.cuda.is_available() or has_cpp_compiler()


@pytest.mark.skipif(not _flex_supported(), reason="FlexAttention needs torch.compile (a C++ compiler on CPU)")
@pytest.mark.parametrize("layout", ["prefix_shared", "packed"])
def test_flex_attention_gives_the_sdpa_log_probs(layout: str, tiny_model_dir, smol_tokenizer) -> None:
    # forward only: FlexAttention has no backward pass on CPU. A fresh compile per shape: torch 2.13's CPU kernel for
    # dynamic shapes (compiled after a second shape) fails to build, one reason preftune refuses flex on CPU for training
    torch._dynamo.reset()
    pairs = hh_pairs(smol_tokenizer, 6)
    batch = collate(layout, pairs, range(len(pairs)), smol_tokenizer.pad_token_id, row_tokens=700)
    out = {}
    for impl in ("sdpa", "flex_attention"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=impl).eval()
        with torch.no_grad():
            out[impl] = sequence_logps(model, batch, chunk=64).logps
    torch.testing.assert_close(out["flex_attention"], out["sdpa"], rtol=1e-5, atol=1e-4)


@pytest.mark.cuda  # FlexAttention has no backward pass on CPU
def test_flex_attention_gives_the_sdpa_gradients_on_gpu(tiny_model_dir, smol_tokenizer) -> None:
    pairs = hh_pairs(smol_tokenizer, 6)
    batch = collate("packed", pairs, range(len(pairs)), smol_tokenizer.pad_token_id, row_tokens=700).to("cuda")
    out, grads = {}, {}
    for impl in ("sdpa", "flex_attention"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=impl).cuda()
        out[impl] = sequence_logps(model, batch, chunk=64).logps
        out[impl].sum().backward()
        grads[impl] = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    torch.testing.assert_close(out["flex_attention"], out["sdpa"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(grads["flex_attention"], grads["sdpa"], rtol=1e-3, atol=1e-4)


def test_flex_mask_matches_the_dense_mask_token_by_token(smol_tokenizer) -> None:
    from preftune.models.attention import flex_block_mask

    pairs = hh_pairs(smol_tokenizer, 5)
    batch = collate("packed", pairs, range(5), smol_tokenizer.pad_token_id, row_tokens=900)
    block_mask = flex_block_mask(batch)
    rows, length = batch.input_ids.shape
    q = torch.arange(length).view(-1, 1).expand(length, length)
    kv = torch.arange(length).view(1, -1).expand(length, length)
    for r in range(rows):
        b = torch.full_like(q, r)
        got = block_mask.mask_mod(b, torch.zeros_like(q), q, kv)
        assert torch.equal(got, batch.attention_mask[r, 0]), f"row {r}"
    assert flex_block_mask(batch) is block_mask  # built once per batch: the policy and a live reference share it
    again = collate("packed", pairs, range(5), smol_tokenizer.pad_token_id, row_tokens=900)
    assert flex_block_mask(again) is not block_mask


def test_flex_attention_refuses_the_padded_layout(smol_tokenizer) -> None:
    from preftune.errors import ConfigError
    from preftune.models.attention import flex_block_mask

    batch = collate("padded", hh_pairs(smol_tokenizer, 2), range(2), smol_tokenizer.pad_token_id)
    with pytest.raises(ConfigError, match="train.layout: packed"):
        flex_block_mask(batch)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the guard is for machines without a GPU")
def test_flex_attention_is_refused_without_a_gpu(tiny_model_dir) -> None:
    from preftune.config import ModelConfig
    from preftune.errors import ConfigError
    from preftune.models.loading import load_model

    with pytest.raises(ConfigError, match="experimental.attention: sdpa on CPU"):
        load_model(ModelConfig(name_or_path=str(tiny_model_dir)), attention="flex")


@pytest.mark.parametrize("layout", ["prefix_shared", "packed"])
def test_segment_attention_gives_the_sdpa_log_probs_and_gradients(layout: str, tiny_model_dir, smol_tokenizer) -> None:
    from preftune.models.attention import register_attention

    register_attention()
    pairs = hh_pairs(smol_tokenizer, 6)
    batch = collate(layout, pairs, range(len(pairs)), smol_tokenizer.pad_token_id, row_tokens=700)
    if layout == "packed":
        assert batch.input_ids.shape[0] < len(pairs)  # several pairs share a row: what segment attention separates
    out, grads = {}, {}
    masks: list[tuple[int, ...]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def seen(*args, **kwargs):  # the masks SDPA is given
        masks.append(tuple(kwargs["attn_mask"].shape) if kwargs.get("attn_mask") is not None else ())
        return sdpa(*args, **kwargs)

    for impl in ("sdpa", "preftune_segments"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=impl)
        masks.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.nn.functional, "scaled_dot_product_attention", seen)
            out[impl] = sequence_logps(model, batch, chunk=64).logps
        if impl == "preftune_segments":  # every layer attended per segment, with the plan's (S, 1, Lmax, Lmax) mask
            plan = batch.derived["segment_plan"]
            assert masks == [tuple(plan.mask.shape)] * model.config.num_hidden_layers
        (out[impl] * torch.linspace(-1, 1, out[impl].numel())).sum().backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters() if "layers.0." in n or "embed" in n}
    torch.testing.assert_close(out["preftune_segments"], out["sdpa"], rtol=1e-5, atol=1e-5)
    for n in grads["sdpa"]:
        torch.testing.assert_close(grads["preftune_segments"][n], grads["sdpa"][n], rtol=1e-4, atol=1e-6, msg=n)


def test_segment_plan_holds_each_pair_alone_and_other_masks_run_plain_sdpa(tiny_model_dir, smol_tokenizer) -> None:
    from preftune.models.attention import register_attention, segment_plan

    register_attention()
    pairs = hh_pairs(smol_tokenizer, 5)
    batch = collate("packed", pairs, range(5), smol_tokenizer.pad_token_id, row_tokens=900)
    plan = segment_plan(batch)
    lengths = sorted(len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)
    assert plan.gather.shape == (5, lengths[-1]) and sorted(plan.mask[:, 0].diagonal(dim1=-2, dim2=-1).sum(-1).tolist()) == [lengths[-1]] * 5
    assert plan.dest.numel() == sum(lengths) and segment_plan(batch) is plan
    flat = batch.input_ids.flatten()
    for s in range(5):  # each segment gathers one pair's tokens, in order
        got = flat[plan.gather[s]].tolist()
        assert any(got[:n] == p.prompt + p.chosen + p.rejected for p in pairs for n in [len(p.prompt) + len(p.chosen) + len(p.rejected)])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="preftune_segments").eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([pairs[0].prompt])  # generation-style call: a 2D mask, not the plan's
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits)


@pytest.mark.parametrize("mode", [True, "selective"])
def test_gradient_checkpointing_gives_the_same_gradients_and_selective_recomputes_no_matmul(mode, tiny_model_dir, smol_tokenizer,
                                                                                            monkeypatch) -> None:
    from preftune.models import checkpointing

    from torch.utils.checkpoint import CheckpointPolicy

    calls: list[tuple[str, object]] = []
    original = checkpointing._policy

    def counting(saved, ctx, op, *args, **kwargs):  # the policy decides in the forward pass what the backward recomputes
        decision = original(saved, ctx, op, *args, **kwargs)
        calls.append((str(op), decision))
        return decision

    monkeypatch.setattr(checkpointing, "_policy", counting)
    pairs = hh_pairs(smol_tokenizer, 4)
    batch = collate("packed", pairs, range(4), smol_tokenizer.pad_token_id, row_tokens=700)
    grads = {}
    for setting in (False, mode):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
        if setting:
            checkpointing.enable_checkpointing(model, setting)
        model.train()
        sequence_logps(model, batch, chunk=64).logps.sum().backward()
        grads[setting] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n in grads[False]:
        torch.testing.assert_close(grads[mode][n], grads[False][n], rtol=1e-5, atol=1e-6, msg=n)
    recomputed = {op for op, decision in calls if decision == CheckpointPolicy.PREFER_RECOMPUTE}
    kept = {op for op, decision in calls if decision == CheckpointPolicy.MUST_SAVE}
    if mode == "selective":
        assert any(op.startswith("aten.mm") for op in kept) and any(op.startswith("aten._scaled_dot") for op in kept)
        assert any("silu" in op for op in recomputed) and any("rsqrt" in op for op in recomputed)  # activations and norms recomputed
        assert not any(op.startswith(("aten.mm", "aten.addmm", "aten.bmm", "aten._scaled_dot")) for op in recomputed)  # products kept
    else:
        assert not calls  # whole layers: no selective policy


def _saved_attention_tensors(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], collections.Counter]:
    """Log-probs, gradients, and the storages autograd keeps by shape class: float masks (R, 1, L, L) and per-head
    (R, heads, L, head_dim) tensors."""
    rows, length = batch.input_ids.shape
    cfg = model.config
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, str] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights and t.dim() == 4 and t.is_floating_point():
            if tuple(t.shape) == (rows, 1, length, length):
                seen[ptr] = "mask"
            elif t.shape[0] == rows and t.shape[-1] == cfg.hidden_size // cfg.num_attention_heads:
                seen[ptr] = f"{t.shape[1]} heads"
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logps = sequence_logps(model, batch, chunk=64).logps
    (logps * torch.linspace(-1, 1, logps.numel())).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return logps.detach(), grads, collections.Counter(seen.values())


@pytest.mark.parametrize("layout", ["prefix_shared", "packed"])
def test_layout_sdpa_shares_one_float_mask_and_keeps_unrepeated_keys(layout: str, tiny_model_dir, smol_tokenizer) -> None:
    from preftune.config import ModelConfig
    from preftune.models.loading import load_model

    pairs = hh_pairs(smol_tokenizer, 6)
    batch = collate(layout, pairs, range(len(pairs)), smol_tokenizer.pad_token_id, row_tokens=700)
    torch.manual_seed(0)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    ours = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))  # experimental.attention: sdpa
    assert ours.config._attn_implementation == "preftune_sdpa"
    ref_logps, ref_grads, ref_saved = _saved_attention_tensors(plain, batch)
    logps, grads, saved = _saved_attention_tensors(ours, batch)
    torch.testing.assert_close(logps, ref_logps, rtol=1e-5, atol=1e-5)
    for n in ref_grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    layers, heads, kv_heads = plain.config.num_hidden_layers, plain.config.num_attention_heads, plain.config.num_key_value_heads
    # transformers: a float copy of the mask in every layer, keys and values repeated to every query head
    assert ref_saved["mask"] == layers and ref_saved[f"{heads} heads"] == 4 * layers and ref_saved[f"{kv_heads} heads"] == 0
    # preftune: one float mask for all layers; per layer q and the output with all heads, k and v with their own heads
    assert saved["mask"] == 1 and saved[f"{heads} heads"] == 2 * layers and saved[f"{kv_heads} heads"] == 2 * layers
    with torch.no_grad():  # a call with another mask (generation's) runs transformers' SDPA
        ids = torch.tensor([pairs[0].prompt])
        torch.testing.assert_close(ours(ids).logits, plain(ids).logits)
