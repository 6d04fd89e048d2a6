"""Fused RMSNorm (`train.fused_norm`): transformers' RMSNorm values and gradients, with the normalized input no longer
kept for the backward pass when the norm weights train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from preftune.data.batch import collate
from preftune.models.fused_norm import fuse_norms, is_rms_norm, rms_norm
from preftune.models.fusing import FUSED
from preftune.models.logprobs import sequence_logps

from ..training.helpers import TOY
from .test_fused_mlp import fused_and_plain_agree
from .test_layouts import hh_pairs

HIDDEN = 32  # tiny_model_dir's hidden_size


def test_rms_norm_gradients_pass_gradcheck() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w: rms_norm(a, w, 1e-5), (x, weight))
    assert torch.autograd.gradcheck(lambda a: rms_norm(a, weight.detach(), 1e-5), (x,))  # frozen weight (LoRA)
    assert torch.autograd.gradcheck(lambda w: rms_norm(x.detach(), w, 1e-5), (weight,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_transformers(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    norm = LlamaRMSNorm(48, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48))
    x = torch.randn(3, 9, 48, dtype=dtype, requires_grad=True)
    probe = torch.randn(3, 9, 48, dtype=dtype)
    want = norm(x)
    want_x, want_w = torch.autograd.grad((want * probe).sum(), (x, norm.weight))
    got = rms_norm(x, norm.weight, norm.variance_epsilon)
    got_x, got_w = torch.autograd.grad((got * probe).sum(), (x, norm.weight))
    assert got.dtype == want.dtype and torch.equal(got, want)  # the forward runs transformers' ops in the same order
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(got_x, want_x, **tol)
    torch.testing.assert_close(got_w, want_w, **tol)


class _OnePlusWeightRMSNorm(torch.nn.Module):
    """Gemma's kind of RMSNorm: scales by 1 + weight; it has the attributes of Llama's but not its output."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(dim))
        self.variance_epsilon = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.variance_epsilon) * (1 + self.weight)).type_as(x)


def test_only_norms_that_compute_llamas_formula_are_fused() -> None:
    assert is_rms_norm(LlamaRMSNorm(8)) and is_rms_norm(LlamaRMSNorm(8).to(torch.bfloat16))
    assert not is_rms_norm(_OnePlusWeightRMSNorm(8))
    assert not is_rms_norm(torch.nn.LayerNorm(8))
    model = torch.nn.Sequential(LlamaRMSNorm(8), _OnePlusWeightRMSNorm(8), torch.nn.LayerNorm(8))
    assert fuse_norms(model) == 1 and fuse_norms(model) == 0  # once, and only the Llama one


def _step(model_dir: Path, tokenizer, lora: bool, fused: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Summed log-probs, gradients and the number of full-batch hidden-wide tensors autograd keeps, for one packed batch."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False))
    layers = model.config.num_hidden_layers
    if fused:
        assert fuse_norms(model) == 2 * layers + 1  # two per decoder layer and the final one
    model.train()
    pairs = hh_pairs(tokenizer, 4)
    batch = collate("packed", pairs, range(len(pairs)), tokenizer.pad_token_id, row_tokens=700)
    full = batch.input_ids.numel() * HIDDEN
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: set[int] = set()
    seen: list[torch.Tensor] = []  # kept alive to the end, so no freed block is reused and counted again

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if t.shape[-1:] == (HIDDEN,) and t.numel() == full and ptr not in weights:
            storages.add(ptr)
            seen.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logps = sequence_logps(model, batch, chunk=64).logps
    (logps * torch.linspace(-1, 1, logps.numel())).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logps.detach(), grads, len(storages)


@pytest.mark.parametrize("lora, fewer", [(False, 5), (True, 0)])
def test_fused_norms_give_the_same_gradients_and_keep_the_normalized_input_no_longer(lora, fewer, tiny_model_dir, smol_tokenizer) -> None:
    # gradients within 1e-4 relative: float32 sums in another order are a few 1e-6 apart; a wrong derivative is off by far more
    plain_saved, saved = fused_and_plain_agree(_step, lora, tiny_model_dir, smol_tokenizer, rtol=1e-4, atol=1e-5)
    # full fine-tuning: each of the 2 layers' 2 norms and the final one kept its normalized input; LoRA's frozen weights never did
    assert plain_saved - saved == fewer


@pytest.mark.parametrize("setting", [True, False])
def test_training_fuses_the_norms_as_configured(setting: bool, tiny_model_dir: Path, smol_tokenizer) -> None:
    import preftune

    from preftune.config import ModelConfig
    from preftune.models.loading import load_model

    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    preftune.train({"train": {"max_steps": 1, "batch_size": 4, "fused_norm": setting}, "data": {"eval_fraction": 0}, "report": False},
                   model=model, tokenizer=smol_tokenizer, train_data=TOY, output_dir=None, progress=False)
    norms = [m for m in model.modules() if type(m).__name__ == "LlamaRMSNorm"]
    assert len(norms) == 2 * len(model.model.layers) + 1
    assert [getattr(m, FUSED, False) for m in norms] == [setting] * len(norms)
