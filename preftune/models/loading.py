"""Load a tokenizer and a causal LM from a Hugging Face folder or name, a GGUF file, or the embedded default."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import ConfigError, ModelError, PreftuneError
from ..run_files import ADAPTER_CONFIG, CONFIG, MERGED_DIR, MODEL_DIR
from .attention import IMPLEMENTATIONS, register_attention
from .embedded import EMBEDDED_NAME, convert_gguf, embedded_model_dir, models_cache_dir

logger = logging.getLogger("preftune.models")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def run_model_folder(path: Path) -> Path:
    """A preftune run folder stands for the model it saved (its merged weights where written, else `model/`); any
    other path is itself."""
    if (path / CONFIG).exists() and (path / MODEL_DIR).is_dir():
        return path / (MERGED_DIR if (path / MERGED_DIR).is_dir() else MODEL_DIR)
    return path


def resolve_model_path(name_or_path: str) -> str:
    """A loadable folder or hub name: the embedded default and GGUF files become cached safetensors folders, and a
    preftune run folder its saved model."""
    if name_or_path == EMBEDDED_NAME:
        return str(embedded_model_dir())
    path = run_model_folder(Path(name_or_path))
    if path.is_dir():
        return str(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"{name_or_path}: GGUF file not found. Fix: check model.name_or_path.")
        with path.open("rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise ModelError(f"{name_or_path}: not a GGUF file (it does not start with the GGUF magic bytes). Fix: give a .gguf written by "
                             "llama.cpp's converter or `preftune export --to gguf`, or a Hugging Face folder.")
        stat = path.stat()
        target = models_cache_dir() / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
        if not (target / "model.safetensors").exists():
            try:
                convert_gguf(path.resolve(), target)
            except Exception as e:  # noqa: BLE001 - a damaged or unsupported file fails in many ways inside gguf/transformers
                raise ModelError(f"{name_or_path}: cannot read this GGUF file ({type(e).__name__}: {e}). Fix: give a complete GGUF of a "
                                 "Llama-family model (a truncated download fails here), or a Hugging Face folder.") from None
        return str(target)
    return name_or_path


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except PreftuneError:
        raise
    except Exception as e:  # noqa: BLE001 - missing, damaged or foreign tokenizer files fail in many ways
        raise ModelError(f"{name_or_path}: cannot load a tokenizer ({e}). Fix: point model.name_or_path at a folder with tokenizer files.") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig, name_or_path: str | None = None, trainable: bool = True, attention: str = "sdpa") -> torch.nn.Module:
    """The model in the configured dtype with the `attention` kernel (experimental.attention); with `trainable` and LoRA
    enabled, wrapped as a peft model."""
    from transformers import AutoModelForCausalLM

    register_attention()
    if attention == "flex" and not torch.cuda.is_available():
        raise ConfigError("experimental.attention = flex: FlexAttention needs a CUDA GPU here (on CPU torch has no backward pass for it, "
                          "and its CPU kernel fails to build for varying batch shapes). Fix: experimental.attention: sdpa on CPU.")
    path = resolve_model_path(name_or_path or cfg.name_or_path)
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code, "dtype": DTYPES.get(cfg.dtype, "auto")}
    if cfg.quantize_4bit:
        kwargs["quantization_config"] = _four_bit_config()
    try:
        adapter = Path(path, ADAPTER_CONFIG)
        if adapter.exists():  # an adapter folder (an SFT run's LoRA, say) stands for its base with the adapter merged in
            model = load_adapter_merged(path, adapter, kwargs, attention)
            model.name_or_path = model.config._name_or_path = path  # an adapter trained on it names this as its base, not the bare base
        else:
            model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=IMPLEMENTATIONS[attention], **kwargs)
    except PreftuneError:
        raise
    except Exception as e:  # noqa: BLE001 - missing, damaged or unsupported model files fail in many ways
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


def load_adapter_merged(path: str, adapter_config: Path, kwargs: dict[str, Any], attention: str) -> torch.nn.Module:
    """The base model an adapter folder names, with the adapter merged into its weights."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    try:
        base_name = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise ModelError(f"{adapter_config}: cannot read base_model_name_or_path ({e}). Fix: save the adapter with peft's save_pretrained.") from None
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(base_name), attn_implementation=IMPLEMENTATIONS[attention], **kwargs)
    return PeftModel.from_pretrained(base, path).merge_and_unload().requires_grad_(True)  # peft froze the base; trainable unless asked not to


def check_same_vocabulary(policy: torch.nn.Module, reference: torch.nn.Module, reference_name: str, key: str,
                          policy_tokenizer: Any = None) -> None:
    """A ModelError naming `key` when the reference cannot score the policy's token ids: another number of output rows
    (token ids), or, when the reference folder has a tokenizer, another vocabulary."""
    rows = [m.get_output_embeddings().weight.shape[0] for m in (policy, reference)]
    if rows[0] != rows[1]:
        raise ModelError(f"{key} = {reference_name}: its vocabulary has {rows[1]} tokens, the policy's {rows[0]}; log-probabilities of one "
                         "tokenization cannot be compared across them. Fix: use a reference with the policy's tokenizer (its start checkpoint).")
    if policy_tokenizer is not None and Path(resolve_model_path(reference_name), "tokenizer_config.json").exists():
        theirs = load_tokenizer(reference_name)
        if theirs.get_vocab() != policy_tokenizer.get_vocab():
            raise ModelError(f"{key} = {reference_name}: its tokenizer's vocabulary differs from the policy's. Fix: use a reference with "
                             "the policy's tokenizer (its start checkpoint).")


def is_peft(model: torch.nn.Module) -> bool:
    """Whether `model` is a peft model (an adapter on a base)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


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
