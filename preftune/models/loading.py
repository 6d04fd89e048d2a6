"""Load a tokenizer and a causal LM from a Hugging Face folder or name, a GGUF file, or the embedded default."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import ConfigError, ModelError
from .attention import IMPLEMENTATIONS
from .embedded import EMBEDDED_NAME, convert_gguf, embedded_model_dir, models_cache_dir

logger = logging.getLogger("preftune.models")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(name_or_path: str) -> str:
    """A loadable folder or hub name: the embedded default and GGUF files become cached safetensors folders."""
    if name_or_path == EMBEDDED_NAME:
        return str(embedded_model_dir())
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelError(f"{name_or_path}: GGUF file not found. Fix: check model.name_or_path.")
        stat = path.stat()
        target = models_cache_dir() / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
        if not (target / "model.safetensors").exists():
            convert_gguf(path.resolve(), target)
        return str(target)
    return name_or_path


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"{name_or_path}: cannot load a tokenizer ({e}). Fix: point model.name_or_path at a folder with tokenizer files.") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig, name_or_path: str | None = None, trainable: bool = True) -> torch.nn.Module:
    """The model in the configured dtype; with `trainable` and LoRA enabled, wrapped as a peft model."""
    from transformers import AutoModelForCausalLM

    if cfg.attention == "flex" and not torch.cuda.is_available():
        raise ConfigError("model.attention = flex: FlexAttention needs a CUDA GPU here (on CPU torch has no backward pass for it, "
                          "and its CPU kernel fails to build for varying batch shapes). Fix: model.attention: sdpa on CPU.")
    path = resolve_model_path(name_or_path or cfg.name_or_path)
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code, "dtype": DTYPES.get(cfg.dtype, "auto")}
    if cfg.quantize_4bit:
        kwargs["quantization_config"] = _four_bit_config()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=IMPLEMENTATIONS[cfg.attention], **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"{name_or_path or cfg.name_or_path}: cannot load the model ({type(e).__name__}: {e}). "
                         "Fix: point model.name_or_path at a Hugging Face folder, a hub name, a .gguf file, or smollm2-135m-instruct.") from None
    model.config.use_cache = False
    if not trainable:
        model.eval()
        model.requires_grad_(False)
        return model
    if cfg.lora.enabled:
        model = add_lora(model, cfg)
    return model


def add_lora(model: torch.nn.Module, cfg: ModelConfig) -> torch.nn.Module:
    from peft import LoraConfig, PeftModel, get_peft_model

    if cfg.lora.adapter_path:
        if not Path(cfg.lora.adapter_path, "adapter_config.json").exists():
            raise ModelError(f"{cfg.lora.adapter_path}: no adapter_config.json. Fix: model.lora.adapter_path must be a folder written by save_pretrained of a peft model.")
        return PeftModel.from_pretrained(model, cfg.lora.adapter_path, is_trainable=True)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        raise ModelError(f"model.lora.target_modules={cfg.lora.target_modules!r}: {e}. Fix: name modules of this model (e.g. q_proj, v_proj) or use all-linear.") from None


def _four_bit_config() -> Any:
    import importlib.util

    if not torch.cuda.is_available():
        raise ModelError("model.quantize_4bit (QLoRA) needs a CUDA GPU; none is available. Fix: set model.quantize_4bit: false.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("model.quantize_4bit (QLoRA) needs bitsandbytes. Fix: pip install bitsandbytes, or set model.quantize_4bit: false.")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
