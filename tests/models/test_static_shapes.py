"""`experimental.static_shapes`: packed rows padded to a multiple of the row size, so a run's batches come in a handful of
shapes and compiled decoder layers never recompile once each shape has been seen; without it they do."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from preftune.data.batch import collate
from preftune.models.compiling import compile_layers
from preftune.models.logprobs import sequence_logps

from ..conftest import has_cpp_compiler
from .test_layouts import hh_pairs

ROW = 256


def batches(pairs, static: bool) -> list:
    return [collate("packed", pairs[k:k + 3], range(3), 0, row_tokens=ROW, static=static) for k in range(0, len(pairs) - 2, 3)]


def test_static_rows_are_a_multiple_of_the_row_size_and_equal_the_dynamic_log_probs(smol_tokenizer, tiny_model_dir) -> None:
    pairs = hh_pairs(smol_tokenizer, 24)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    static, dynamic = batches(pairs, True), batches(pairs, False)
    assert len({b.input_ids.shape[1] for b in dynamic}) > len({b.input_ids.shape[1] for b in static})
    for s, d in zip(static, dynamic, strict=True):
        assert s.input_ids.shape[1] % ROW == 0 and s.input_ids.shape[0] == d.input_ids.shape[0]
        assert int(s.token_count()) == int(d.token_count())  # padding only
        with torch.no_grad():
            torch.testing.assert_close(sequence_logps(model, s, 64).logps, sequence_logps(model, d, 64).logps, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_layers_never_recompile_after_warm_up_with_static_shapes(smol_tokenizer, tiny_model_dir) -> None:
    pairs = hh_pairs(smol_tokenizer, 40)
    for static in (True, False):
        torch._dynamo.reset()
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        compile_layers(model, "inductor", dynamic=False)
        seen: set[tuple[int, ...]] = set()
        bs = batches(pairs, static)
        warm, later = (bs[:6], bs[6:]) if static else (bs[:1], bs[1:])
        for b in warm:
            sequence_logps(model, b, 64).logps.sum().backward()
            seen.add(tuple(b.input_ids.shape))
        repeat = [b for b in later if tuple(b.input_ids.shape) in seen]
        fresh = [b for b in later if tuple(b.input_ids.shape) not in seen]
        if static:
            assert len(seen) <= 4 and repeat  # a handful of shapes, which the later batches reuse
            with torch._dynamo.config.patch(error_on_recompile=True):
                for b in repeat:
                    sequence_logps(model, b, 64).logps.sum().backward()
        else:
            assert fresh  # dynamic rows: new lengths keep coming
            with torch._dynamo.config.patch(error_on_recompile=True), pytest.raises(Exception, match="[Rr]ecompil"):
                sequence_logps(model, fresh[0], 64).logps.sum().backward()
    torch._dynamo.reset()


def test_cuda_graphs_need_static_shapes(tmp_path, tiny_model_dir) -> None:
    from preftune.config import load_config

    with pytest.raises(Exception, match="reduce-overhead .* needs experimental.compile: true and experimental.static_shapes: true"):
        load_config(None, [f"model.name_or_path={tiny_model_dir}", "experimental.compile=true", "experimental.compile_mode=reduce-overhead"])
    load_config(None, [f"model.name_or_path={tiny_model_dir}", "experimental.compile=true", "experimental.static_shapes=true", "experimental.compile_mode=reduce-overhead"])


@pytest.mark.cuda
def test_cuda_graph_steps_equal_eager_steps_on_gpu(tmp_path, tiny_model_dir) -> None:
    from preftune.training.run import train

    from ..training.helpers import tiny_config, train_metrics

    losses = {}
    for name, extra in {"eager": [], "graphs": ["experimental.compile=true", "experimental.static_shapes=true", "experimental.compile_mode=reduce-overhead"]}.items():
        cfg = tiny_config(tmp_path, tiny_model_dir, "train.max_steps=6", "train.learning_rate=1e-2", "experimental.static_shapes=true", *extra, name=name)
        train(cfg, show_progress=False)
        losses[name] = [m["loss"] for m in train_metrics(tmp_path / name)]
    assert losses["eager"][-1] < losses["eager"][0]
    assert losses["graphs"] == pytest.approx(losses["eager"], abs=1e-4)
