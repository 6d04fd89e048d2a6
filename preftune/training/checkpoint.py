"""Checkpoints that are complete or invisible: written to a temporary folder with a manifest of checksums,
then renamed into place; damaged ones are detected and skipped."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("preftune.training")
PREFIX = "checkpoint-"
MANIFEST = "manifest.json"


@dataclass
class TrainState:
    """Where training is: optimizer steps done, epoch, batches of that epoch consumed, early-stopping state."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_eval_margin: float | None = None
    evals_without_improvement: int = 0
    pairs_seen: int = 0
    skipped_steps: int = 0
    metrics_lines: int | None = None  # lines of metrics.jsonl written when the checkpoint was taken


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """Bytes of one checkpoint: each trainable weight and AdamW's two moments of it (kept in the weight's dtype)."""
    return sum(3 * p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def save_checkpoint(output_dir: Path, state: TrainState, model: torch.nn.Module, optimizer_state: dict[str, Any],
                    scheduler_state: dict[str, Any], keep: int, save_model: Any) -> Path:
    """Write checkpoint-{step} atomically; keep the newest `keep` checkpoints. `save_model(model, folder)` writes weights."""
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"{PREFIX}{state.step}"
    tmp = Path(tempfile.mkdtemp(dir=output_dir, prefix=f".tmp-{PREFIX}{state.step}-"))
    save_model(model, tmp / "model")
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(scheduler_state, tmp / "scheduler.pt")
    rng = rng_state()
    torch.save({"torch": rng["torch"]}, tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({**asdict(state), "python_rng": rng["python"], "numpy_rng": rng["numpy"]}))
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {str(p.relative_to(tmp)): _sha256(p) for p in files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    for p in [*files, tmp / MANIFEST]:
        with p.open("rb") as f:
            os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial(output_dir: Path) -> int:
    """Delete checkpoint folders left half-written by a killed run (never visible as checkpoints); returns how many."""
    if not output_dir.exists():
        return 0
    partial = [p for p in output_dir.iterdir() if p.is_dir() and p.name.startswith(f".tmp-{PREFIX}")]
    for p in partial:
        shutil.rmtree(p, ignore_errors=True)
        logger.info("removed %s, a checkpoint a killed run did not finish writing", p)
    return len(partial)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoint folders, oldest first (by step)."""
    if not output_dir.exists():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def verify(folder: Path) -> str | None:
    """None when every file matches the manifest; else what is wrong."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        return "no manifest"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "manifest unreadable"
    for rel, digest in manifest.items():
        p = folder / rel
        if not p.exists():
            return f"{rel} missing"
        if _sha256(p) != digest:
            return f"{rel} damaged (checksum mismatch)"
    return None


def latest_valid_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint that passes verification; damaged ones are skipped with a warning."""
    for folder in reversed(list_checkpoints(output_dir)):
        problem = verify(folder)
        if problem is None:
            return folder
        logger.warning("checkpoint %s skipped: %s; falling back to the previous one", folder, problem)
    return None


def load_checkpoint(folder: Path, load_optimizer: Any, scheduler: Any) -> TrainState:
    """Restore optimizer (`load_optimizer(state)`), scheduler and RNG states (weights are loaded by the caller) and
    return the train state."""
    load_optimizer(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    meta = json.loads((folder / "trainer_state.json").read_text())
    rng = torch.load(folder / "rng.pt", weights_only=True)
    set_rng_state({"python": meta.pop("python_rng"), "numpy": meta.pop("numpy_rng"), "torch": rng["torch"]})
    return TrainState(**meta)
