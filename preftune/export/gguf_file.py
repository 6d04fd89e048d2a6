"""Write a Llama-family causal LM (weights, tokenizer, chat template) as one GGUF file with the `gguf` package's writer,
in the layout llama.cpp's own converter writes (tensor names, q/k row permutation, metadata keys)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError

logger = logging.getLogger("preftune.export")

GGUF_DTYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32  # q8_0 quantizes blocks of 32 values along a row

GLOBAL_TENSORS = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
LAYER_TENSORS = {"self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
                 "self_attn.o_proj.weight": "attn_output.weight", "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
                 "mlp.down_proj.weight": "ffn_down.weight", "input_layernorm.weight": "attn_norm.weight",
                 "post_attention_layernorm.weight": "ffn_norm.weight"}
SMOLLM_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def gguf_name(hf_name: str) -> str:
    """The GGUF tensor name of a Llama weight (`model.layers.3.mlp.up_proj.weight` -> `blk.3.ffn_up.weight`)."""
    if hf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[hf_name]
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"] and ".".join(parts[3:]) in LAYER_TENSORS:
        return f"blk.{parts[2]}.{LAYER_TENSORS['.'.join(parts[3:])]}"
    raise ModelError(f"{hf_name}: no GGUF name for this weight. Fix: export --to hf; GGUF export covers Llama-family models only.")


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: within each head, the two rotary halves interleaved (the inverse of what
    transformers' GGUF loader undoes)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_architecture(config: Any) -> None:
    """Refuse what this writer does not map: non-Llama models, biases, scaled RoPE."""
    if getattr(config, "model_type", None) != "llama":
        raise ModelError(f"GGUF export: model_type {getattr(config, 'model_type', None)!r} is not supported (Llama family only, e.g. SmolLM2). "
                         "Fix: export --to hf, then convert with llama.cpp's convert_hf_to_gguf.py.")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ModelError("GGUF export: attention or MLP biases are not supported. Fix: export --to hf.")
    rope = getattr(config, "rope_scaling", None) or {}
    if rope and rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ModelError(f"GGUF export: RoPE scaling {rope!r} is not supported. Fix: export --to hf.")


def rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(getattr(config, "rope_theta", None) or params.get("rope_theta", 10000.0))


def pre_tokenizer(tokenizer: Any) -> str:
    """llama.cpp's name for the pre-tokenizer: SmolLM's where the vocabulary is SmolLM's, else its default regex."""
    vocab = tokenizer.get_vocab()
    if len(vocab) == 49152 and all(vocab.get(t) == i for i, t in enumerate(SMOLLM_SPECIALS)):
        return "smollm"
    logger.warning("GGUF export: unknown tokenizer family; llama.cpp will split text with its default pre-tokenizer regex")
    return "default"


def encode_tensor(w: np.ndarray, dtype: str) -> tuple[np.ndarray, Any]:
    """The array to store and its raw GGML type (None: the array's own float type). Norms and vectors stay f32, as in
    llama.cpp's converter; q8_0 applies to matrices whose rows split into blocks of 32 (else f16)."""
    import gguf

    if w.ndim < 2 or dtype == "f32":
        return w.astype(np.float32), None
    if dtype == "q8_0" and w.shape[-1] % Q8_BLOCK == 0:
        return gguf.quants.quantize(w.astype(np.float32), gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return w.astype(np.float16), None


def write_gguf(model: torch.nn.Module, tokenizer: Any, path: Path, dtype: str, name: str) -> Path:
    """`model` (a plain `LlamaForCausalLM`, adapters merged) and its tokenizer as one GGUF file at `path`."""
    import gguf

    if dtype not in GGUF_DTYPES:
        raise ModelError(f"--dtype {dtype}: GGUF export writes one of {', '.join(GGUF_DTYPES)}.")
    config = model.config
    check_architecture(config)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)
    add_tokenizer(writer, tokenizer, config.vocab_size)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd for the output when output.weight is absent
        w = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            w = permute_rows(w, n_head)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            w = permute_rows(w, n_kv)
        data, raw = encode_tensor(w, dtype)
        writer.add_tensor(gguf_name(hf_name), data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """Byte-level BPE vocabulary, token types, merges, special token ids and the chat template."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or '"type":"BPE"' not in backend.to_str().replace(" ", ""):
        raise ModelError("GGUF export: only byte-level BPE tokenizers (GPT-2 style, as SmolLM2's) are supported. Fix: export --to hf.")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids)
    added = {i for i in getattr(tokenizer, "added_tokens_decoder", {})}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer)
