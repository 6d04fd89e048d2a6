"""`preftune export`: GGUF files that transformers (and so llama.cpp's layout) reads back to the same log-probs and
tokenizer, merged Hugging Face folders, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from preftune.cli import main
from preftune.export.gguf_file import permute_rows
from preftune.training.run import train

from ..training.helpers import tiny_config

TEXTS = ["What is 37 + 45? The answer is 82.", "<|im_start|>user\nHello there, ünïcode 123<|im_end|>"]
# (relative error of the summed log-probs, largest per-token error) allowed; measured on the tiny test model (printed
# with -s): f32 0 / 0, f16 1.0e-7 / 7.4e-5, q8_0 1.4e-5 / 2.4e-3 -- the bounds sit a few times above
BOUNDS = {"f32": (1e-7, 1e-6), "f16": (1e-6, 3e-4), "q8_0": (1e-4, 1e-2)}


def token_logps(model: torch.nn.Module, tokenizer) -> torch.Tensor:  # noqa: ANN001
    out = []
    for text in TEXTS:
        ids = torch.tensor([tokenizer(text).input_ids])
        with torch.no_grad():
            logp = model(input_ids=ids).logits.double().log_softmax(-1)
        out.append(logp[0, :-1].gather(-1, ids[0, 1:, None]).squeeze(-1))
    return torch.cat(out)


def load_gguf(path: Path):  # noqa: ANN201
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_permute_rows_is_llama_cpps_interleave() -> None:
    w = np.arange(8 * 2).reshape(8, 2)  # 2 heads of 4 rows: halves [0,1 | 2,3] interleaved to 0,2,1,3
    assert permute_rows(w, 2)[:, 0].tolist() == [0, 4, 2, 6, 8, 12, 10, 14]


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
def test_gguf_round_trip_gives_the_source_log_probs(dtype: str, tiny_model_dir: Path, tmp_path: Path, smol_tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / f"m-{dtype}.gguf"
    assert main(["export", str(tiny_model_dir), "--to", "gguf", "--dtype", dtype, "-o", str(out)]) == 0
    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model, tokenizer = load_gguf(out)
    want, got = token_logps(source, smol_tokenizer), token_logps(model, smol_tokenizer)
    rel = float((got.sum() - want.sum()).abs() / want.sum().abs())
    token = float((got - want).abs().max())
    print(f"{dtype}: relative error of summed log-probs {rel:.2e}, largest token error {token:.2e}")
    assert rel <= BOUNDS[dtype][0] and token <= BOUNDS[dtype][1]
    for text in TEXTS:
        assert tokenizer(text).input_ids == smol_tokenizer(text).input_ids
    assert tokenizer.chat_template == smol_tokenizer.chat_template and tokenizer.eos_token_id == smol_tokenizer.eos_token_id


def test_a_lora_run_exports_merged_to_hf_and_gguf(tiny_model_dir: Path, tmp_path: Path, smol_tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    from preftune.evaluation.models import load_eval_models

    cfg = tiny_config(tmp_path, tiny_model_dir, "model.lora.enabled=true", "model.lora.target_modules=all-linear", "train.learning_rate=5e-2",
                      "train.max_steps=3", "report=false")
    run = train(cfg, show_progress=False).output_dir
    trained = load_eval_models(str(run), None, reference_free=True).policy
    want = token_logps(trained, smol_tokenizer)
    assert not torch.allclose(want, token_logps(AutoModelForCausalLM.from_pretrained(tiny_model_dir), smol_tokenizer))  # the adapter matters
    assert main(["export", str(run), "--to", "hf", "--dtype", "f32", "-o", str(tmp_path / "hf")]) == 0
    folder = tmp_path / "hf"
    assert (folder / "README.md").exists() and not (folder / "adapter_config.json").exists()
    assert torch.allclose(token_logps(AutoModelForCausalLM.from_pretrained(folder), smol_tokenizer), want, atol=1e-5)
    assert main(["export", str(run), "--to", "gguf", "--dtype", "f32", "-o", str(tmp_path / "run.gguf")]) == 0
    assert torch.allclose(token_logps(load_gguf(tmp_path / "run.gguf")[0], smol_tokenizer), want, atol=1e-5)


def test_export_refuses_what_it_cannot_write(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tiny_model_dir), "--to", "gguf", "--dtype", "q4_k", "-o", str(tmp_path / "x.gguf")]) == 2
    assert "--dtype q4_k" in capsys.readouterr().err
    assert main(["export", str(tiny_model_dir), "--to", "gguf", "-o", str(tmp_path / "x.bin")]) == 2
    assert "name it *.gguf" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "--to", "hf", "-o", str(tmp_path / "y")]) == 2
    assert "preftune: error:" in capsys.readouterr().err
