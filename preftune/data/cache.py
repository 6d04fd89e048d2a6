"""Tokenized data on disk, keyed by the data, the tokenizer and the settings; built with several processes."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .filters import Example
from .records import PreferencePair, as_text
from .tokenize import PairTokenizer, TokenizedPair, TokenizeSettings, tokenizer_fingerprint

logger = logging.getLogger("preftune.data")
CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    """PREFTUNE_DATA_CACHE, else PREFTUNE_CACHE/tokenized, else ~/.cache/preftune/tokenized."""
    if os.environ.get("PREFTUNE_DATA_CACHE"):
        return Path(os.environ["PREFTUNE_DATA_CACHE"]) / "tokenized"
    return Path(os.environ.get("PREFTUNE_CACHE", Path.home() / ".cache" / "preftune")) / "tokenized"


def data_fingerprint(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        if isinstance(ex, PreferencePair):
            parts = (as_text(ex.prompt), as_text(ex.chosen), as_text(ex.rejected), repr(ex.weight), repr(ex.conversational))
        else:
            parts = (as_text(ex.prompt), as_text(ex.completion), repr(ex.label), repr(ex.weight), repr(ex.conversational))
        h.update("\x00".join(parts).encode())
        h.update(b"\x01")
    return h.hexdigest()[:16]


_worker: PairTokenizer | None = None


def _init_worker(tokenizer: Any, settings: TokenizeSettings) -> None:
    global _worker
    _worker = PairTokenizer(tokenizer, settings)


def _tokenize_chunk(chunk: list[Example]) -> tuple[list[TokenizedPair | None], dict[str, int]]:
    assert _worker is not None
    _worker.counts.clear()
    out = [(_worker(ex) if isinstance(ex, PreferencePair) else _worker.unpaired(ex)) for ex in chunk]
    return out, dict(_worker.counts)


def tokenize_examples(examples: Sequence[Example], tokenizer: Any, settings: TokenizeSettings, num_proc: int = 1,
                      cache_dir: Path | None = None) -> tuple[list[TokenizedPair], list[int], dict[str, int]]:
    """Tokenize (or reload from the cache) every example.

    Returns the tokenized pairs, the index of each in `examples` (dropped ones are absent), and the
    truncation/drop counts.
    """
    key = hashlib.sha256("|".join([CACHE_VERSION, data_fingerprint(examples), tokenizer_fingerprint(tokenizer), settings.key()]).encode()).hexdigest()[:24]
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    path = folder / f"{key}.npz"
    if path.exists():
        try:
            loaded = _load(path)
            logger.info("data: tokenized data loaded from cache %s", path)
            return loaded
        except (OSError, ValueError, KeyError) as e:
            logger.warning("data: tokenized cache %s is unreadable (%s); rebuilding it", path, e)
    _init_worker(tokenizer, settings)
    if num_proc > 1 and len(examples) >= 256:
        size = (len(examples) + num_proc * 4 - 1) // (num_proc * 4)
        chunks = [list(examples[i:i + size]) for i in range(0, len(examples), size)]
        with mp.get_context("fork").Pool(num_proc, initializer=_init_worker, initargs=(tokenizer, settings)) as pool:
            parts = pool.map(_tokenize_chunk, chunks)
    else:
        parts = [_tokenize_chunk(list(examples))]
    counts: Counter[str] = Counter()
    results: list[TokenizedPair | None] = []
    for out, c in parts:
        results.extend(out)
        counts.update(c)
    pairs = [r for r in results if r is not None]
    index = [i for i, r in enumerate(results) if r is not None]
    _save(path, pairs, index, dict(counts))
    return pairs, index, dict(counts)


def _save(path: Path, pairs: list[TokenizedPair], index: list[int], counts: dict[str, int]) -> None:
    lens = np.array([[len(p.prompt), len(p.chosen), len(p.rejected)] for p in pairs], dtype=np.int64).reshape(-1, 3)
    flat = np.fromiter((t for p in pairs for t in (*p.prompt, *p.chosen, *p.rejected)), dtype=np.int64)
    weights = np.array([p.weight for p in pairs], dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    np.savez(tmp, lens=lens, flat=flat, weights=weights, index=np.array(index, dtype=np.int64), counts=np.array(json.dumps(counts)))
    os.replace(tmp, path)


def _load(path: Path) -> tuple[list[TokenizedPair], list[int], dict[str, int]]:
    with np.load(path, allow_pickle=False) as z:
        lens, flat, weights, index, counts = z["lens"], z["flat"].tolist(), z["weights"], z["index"].tolist(), json.loads(str(z["counts"]))
    pairs, pos = [], 0
    for (lp, lc, lr), w in zip(lens.tolist(), weights.tolist()):
        p = flat[pos:pos + lp]; pos += lp
        c = flat[pos:pos + lc]; pos += lc
        r = flat[pos:pos + lr]; pos += lr
        pairs.append(TokenizedPair(p, c, r, w))
    return pairs, index, counts
