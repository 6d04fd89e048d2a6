"""Load what to export (a run folder, a model or adapter folder, a .gguf, the embedded model), merge any LoRA adapter,
and write it as a Hugging Face folder or a GGUF file."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..run_files import check_writable
from ..evaluation.models import load_eval_models
from .gguf_file import GGUF_DTYPES, write_gguf

logger = logging.getLogger("preftune.export")

FORMATS = ("gguf", "hf")
HF_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def merged_model(source: str) -> tuple[torch.nn.Module, Any]:
    """The model at `source` as a plain float32 causal LM (a LoRA adapter merged into its base) and its tokenizer."""
    models = load_eval_models(source, None, "float32", "cpu", reference_free=True)
    model = models.policy
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.float().eval(), models.tokenizer


def model_card(source: str, to: str, dtype: str) -> str:
    return (f"---\nlibrary_name: transformers\ntags: [preftune]\n---\n\n# Exported by preftune\n\n"
            f"From `{source}` (LoRA adapters merged), written as {to} in {dtype} by `preftune export`.\n")


def export(source: str | Path, to: str, output: str | Path, dtype: str = "f16") -> Path:
    """Write the model at `source` to `output`: `to="hf"` a merged folder (weights, tokenizer, chat template, model card),
    `to="gguf"` one GGUF file for llama.cpp / Ollama. Returns the path written."""
    if to not in FORMATS:
        raise ConfigError(f"--to {to}: choose one of {', '.join(FORMATS)}.")
    allowed = GGUF_DTYPES if to == "gguf" else tuple(HF_DTYPES)
    if dtype not in allowed:
        raise ConfigError(f"--dtype {dtype}: export --to {to} writes one of {', '.join(allowed)}.")
    out = Path(output)
    if to == "gguf" and out.suffix != ".gguf":
        raise ConfigError(f"-o {output}: a GGUF export is one file; name it *.gguf.")
    if out.exists() and (out.is_file() if to == "hf" else out.is_dir()):
        raise ConfigError(f"-o {output}: exists and is a {'file' if out.is_file() else 'folder'}. Fix: choose a new path.")
    check_writable(out.parent, "-o: the folder of")
    model, tokenizer = merged_model(str(source))
    try:
        path = write(model, tokenizer, source, to, out, dtype)
    except OSError as e:
        raise ConfigError(f"-o {output}: writing failed ({e.strerror or e}). Fix: free space or choose another path.") from None
    logger.info("export: %s written", path)
    return path


def write(model: torch.nn.Module, tokenizer: Any, source: str | Path, to: str, out: Path, dtype: str) -> Path:
    """Write `model` as one GGUF file or a Hugging Face folder (through a temporary folder, replaced at the end)."""
    if to == "gguf":
        return write_gguf(model, tokenizer, out, dtype, name=Path(str(source)).name)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(HF_DTYPES[dtype]).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(model_card(str(source), "a Hugging Face folder", dtype), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return out
