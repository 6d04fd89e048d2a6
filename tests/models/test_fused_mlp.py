"""Fused SwiGLU MLPs (`train.fused_mlp`): the same log-probs and gradients as transformers' own MLP, with one
intermediate-sized tensor less kept for the backward pass in every layer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from preftune.data.batch import collate
from preftune.models.fused_mlp import fuse_mlps, swiglu
from preftune.models.fusing import FUSED
from preftune.models.logprobs import sequence_logps

from ..training.helpers import TOY
from .test_layouts import hh_pairs

INTERMEDIATE = 64  # tiny_model_dir's intermediate_size: no other tensor of its forward pass is this wide


def test_swiglu_gradients_pass_gradcheck() -> None:
    torch.manual_seed(0)
    gate = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    up = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(swiglu, (gate, up))
    frozen_up = up.detach()
    swiglu(gate, frozen_up).sum().backward()
    torch.testing.assert_close(gate.grad, torch.func.grad(lambda g: (torch.nn.functional.silu(g) * frozen_up).sum())(gate.detach()))


def _step(model_dir: Path, tokenizer, lora: str | None, fused: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Summed log-probs, gradients and bytes of intermediate-wide tensors autograd keeps, for one packed batch."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    if lora:
        from peft import LoraConfig, get_peft_model

        targets = "all-linear" if lora == "all" else ["q_proj", "v_proj"]
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, init_lora_weights=False))
    if fused:
        assert fuse_mlps(model) == 2 and fuse_mlps(model) == 0  # every layer once
    model.train()
    pairs = hh_pairs(tokenizer, 4)
    batch = collate("packed", pairs, range(len(pairs)), tokenizer.pad_token_id, row_tokens=700)
    storages: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.dim() >= 2 and t.shape[-1] == INTERMEDIATE and t.untyped_storage().data_ptr() not in weights:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logps = sequence_logps(model, batch, chunk=64).logps
    logps.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logps.detach(), grads, sum(storages.values())


def fused_and_plain_agree(step, lora, model_dir: Path, tokenizer, rtol: float, atol: float) -> tuple[int, int]:
    """Runs `step` plain and fused, asserts equal log-probs and gradients (within rtol / atol), returns what each kept."""
    plain_logps, plain_grads, plain_saved = step(model_dir, tokenizer, lora, fused=False)
    logps, grads, saved = step(model_dir, tokenizer, lora, fused=True)
    torch.testing.assert_close(logps, plain_logps, rtol=0, atol=1e-5)
    assert grads.keys() == plain_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    return plain_saved, saved


@pytest.mark.parametrize("lora, kept", [(None, 4), ("qv", 3), ("all", 4)])
def test_fused_mlps_give_the_same_gradients_and_keep_one_tensor_less(lora, kept, tiny_model_dir, smol_tokenizer) -> None:
    plain_saved, saved = fused_and_plain_agree(_step, lora, tiny_model_dir, smol_tokenizer, rtol=1e-5, atol=1e-7)
    # transformers' MLP keeps gate, silu(gate), up (and, when down_proj trains, their product); the fused one keeps one less
    assert saved * kept == plain_saved * (kept - 1)


@pytest.mark.parametrize("setting", [True, False])
def test_training_fuses_the_mlps_as_configured(setting: bool, tiny_model_dir: Path, smol_tokenizer) -> None:
    import preftune

    from preftune.config import ModelConfig
    from preftune.models.loading import load_model

    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    preftune.train({"train": {"max_steps": 1, "batch_size": 4, "fused_mlp": setting}, "data": {"eval_fraction": 0}, "report": False},
                   model=model, tokenizer=smol_tokenizer, train_data=TOY, output_dir=None, progress=False)
    mlps = [layer.mlp for layer in model.model.layers]
    assert [getattr(m, FUSED, False) for m in mlps] == [setting] * len(mlps)
    assert ("forward" in vars(mlps[0])) == setting  # an instance forward replaces the class's only when fused


@pytest.mark.parametrize(("value", "device", "fused"), [("auto", "cpu", True), ("auto", "cuda", False), (True, "cuda", True), (False, "cpu", False)])
def test_fused_options_are_on_for_cpu_training_only_unless_set(value: object, device: str, fused: bool) -> None:
    """Measured on CPU only, so `auto` (the default) leaves GPU runs as transformers builds them."""
    from preftune.config import TrainConfig

    t = TrainConfig(fused_mlp=value, fused_norm=value)
    assert t.fuses("fused_mlp", device) is fused and t.fuses("fused_norm", device) is fused
    assert TrainConfig().fused_mlp == "auto" and TrainConfig().fused_norm is False  # no measured win on CPU either
