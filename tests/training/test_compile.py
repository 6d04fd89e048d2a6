"""`experimental.compile`: the compiled decoder layers train to the same numbers as eager ones, and save the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from preftune.errors import ConfigError
from preftune.models.compiling import compile_layers
from preftune.training.run import train

from ..conftest import has_cpp_compiler
from .helpers import tiny_config, train_metrics, weights

needs_compiler = pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile's inductor backend needs a C++ compiler on CPU")


@needs_compiler
@pytest.mark.parametrize("lora", [False, True])
def test_compiled_training_matches_eager(tmp_path: Path, tiny_model_dir: Path, lora: bool) -> None:
    import torch._dynamo

    extra = ["model.lora.enabled=true", "model.lora.target_modules=all-linear"] if lora else ["reference.strategy=separate"]
    runs = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        cfg = tiny_config(tmp_path, tiny_model_dir, *extra, f"experimental.compile={str(compiled).lower()}", "train.max_steps=3", "report=false",
                          "train.deterministic=false", name=f"compiled-{compiled}")
        result = train(cfg, show_progress=False)
        captured = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert (captured > 0) == compiled, f"compile={compiled}: {captured} graphs captured"
        runs[compiled] = result.output_dir
    eager, compiled = train_metrics(runs[False]), train_metrics(runs[True])
    assert len(eager) == len(compiled) == 3
    for a, b in zip(eager, compiled):
        for key in ("loss", "logps/chosen", "logps/rejected", "rewards/margins"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    w_eager, w_compiled = weights(runs[False]), weights(runs[True])
    assert w_eager.keys() == w_compiled.keys(), "compiling must not change saved parameter names"
    assert w_eager, "the runs saved weights"
    for name, value in w_eager.items():
        torch.testing.assert_close(w_compiled[name], value, rtol=1e-4, atol=1e-5)


def test_compile_names_a_model_without_decoder_layers() -> None:
    class NoLayers(torch.nn.Module):
        def get_decoder(self) -> torch.nn.Module:
            return torch.nn.Linear(2, 2)

        def get_output_embeddings(self) -> torch.nn.Module:
            return torch.nn.Linear(2, 2)

    with pytest.raises(ConfigError, match="experimental.compile: false"):
        compile_layers(NoLayers())


def test_adamw_auto_takes_the_fused_kernel_for_plain_cpu_parameters() -> None:
    from preftune.training.setup import adamw_impl

    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    assert adamw_impl(params, "auto") == "fused"
    assert adamw_impl(params, "auto", sharded=True) == "foreach"
    assert adamw_impl([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))], "auto") == "foreach"
    assert adamw_impl(params, "foreach") == "foreach"


def test_fused_and_foreach_adamw_train_to_the_same_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    runs = {}
    for impl in ("fused", "foreach"):
        cfg = tiny_config(tmp_path, tiny_model_dir, f"train.optimizer_impl={impl}", "train.max_steps=3", "report=false", name=impl)
        runs[impl] = train(cfg, show_progress=False).output_dir
    fused, foreach = weights(runs["fused"]), weights(runs["foreach"])
    start = weights_at_start(tiny_model_dir)
    for name, value in foreach.items():
        torch.testing.assert_close(fused[name], value, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(start[name], value) for name, value in foreach.items() if name in start), "the weights moved"


def weights_at_start(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))
