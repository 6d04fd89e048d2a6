"""The four reference-model strategies, chosen once at set-up: separate, adapter_disabled, precomputed, none."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..data.batch import PreferenceBatch
from ..data.tokenize import TokenizedPair
from ..models.logprobs import policy_logps
from .batches import Reference, reference_values, score

logger = logging.getLogger("preftune.training")


class ModelReference:
    """A reference that is a model: its log-probs are the model's, taken inside `as_model` (which subclasses define)."""

    name = "model"
    chunk: int

    @torch.no_grad()
    def logps(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        with self.as_model() as model, _eval_mode(model):
            s = policy_logps(model, batch, self.chunk)  # a plain model, or one wrapped in LogpsModel (sharded)
        return s.chosen(batch.num_pairs), s.rejected(batch.num_pairs)

    def as_model(self) -> contextlib.AbstractContextManager[torch.nn.Module]:
        raise NotImplementedError


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode for the block (no dropout: the reference is deterministic), then back in its mode."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


class SeparateReference(ModelReference):
    """A frozen copy of the model (by default the policy's starting checkpoint)."""

    name = "separate"

    def __init__(self, model: torch.nn.Module, chunk: int):
        self.model, self.chunk = model, chunk

    @contextlib.contextmanager
    def as_model(self) -> Iterator[torch.nn.Module]:
        yield self.model


class AdapterDisabledReference(ModelReference):
    """The LoRA policy with its adapter switched off: the base weights, with no second copy in memory."""

    name = "adapter_disabled"

    def __init__(self, policy: torch.nn.Module, chunk: int, unwrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m):
        self.policy, self.chunk, self.unwrap = policy, chunk, unwrap

    @contextlib.contextmanager
    def as_model(self) -> Iterator[torch.nn.Module]:
        model = self.unwrap(self.policy)
        with model.disable_adapter():
            yield model


REFERENCE_ADAPTER = "reference"


class StartAdapterReference(AdapterDisabledReference):
    """The LoRA policy with a frozen copy of the adapter it started from (`REFERENCE_ADAPTER`) active instead of the
    trained one: the SFT model a continued adapter came from, with no second copy of the base weights."""

    name = "start_adapter"

    @contextlib.contextmanager
    def as_model(self) -> Iterator[torch.nn.Module]:
        model = self.unwrap(self.policy)
        trained = model.active_adapter
        model.set_adapter(REFERENCE_ADAPTER)  # peft's switch; switching back below makes the trained adapter trainable again
        try:
            yield model
        finally:
            model.set_adapter(trained)


def add_frozen_start_adapter(model: torch.nn.Module) -> None:
    """Copy the peft model's active adapter, as it is now, into a frozen adapter `REFERENCE_ADAPTER`."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    active = model.active_adapter
    model.add_adapter(REFERENCE_ADAPTER, model.peft_config[active])
    set_peft_model_state_dict(model, get_peft_model_state_dict(model, adapter_name=active), adapter_name=REFERENCE_ADAPTER)
    model.set_adapter(active)
    for name, p in model.named_parameters():
        if f".{REFERENCE_ADAPTER}." in name:
            p.requires_grad_(False)


class NoReference:
    """Reference-free losses (SimPO, ORPO, or loss.reference_free): nothing to compute."""

    name = "none"

    def logps(self, batch: PreferenceBatch) -> None:
        return None

    @contextlib.contextmanager
    def as_model(self) -> Iterator[None]:
        yield None


class ReferenceTable:
    """Reference log-probs by pair index, NaN where not computed yet, kept in the cache file `path` (None: in memory
    only). Saving merges with what the file already holds, under a lock, so runs and processes that fill different pairs
    of the same data add to one table."""

    def __init__(self, n_pairs: int, path: Path | None):
        self.path = path
        self.chosen = torch.full((n_pairs,), float("nan"), dtype=torch.float32)
        self.rejected = torch.full((n_pairs,), float("nan"), dtype=torch.float32)
        self.unsaved = 0
        if path is not None and path.exists():
            self._merge(load_file(str(path)))

    def _merge(self, saved: dict[str, torch.Tensor]) -> None:
        if saved["chosen"].shape != self.chosen.shape:
            return  # not this data (the key makes this impossible short of a hash collision): recompute
        take = torch.isnan(self.chosen) & ~torch.isnan(saved["chosen"]) & ~torch.isnan(saved["rejected"])
        self.chosen[take], self.rejected[take] = saved["chosen"][take].float(), saved["rejected"][take].float()

    def has(self, idx: torch.Tensor) -> bool:
        """Whether every pair in `idx` has its log-probs."""
        return not bool(torch.isnan(self.chosen[idx]).any() or torch.isnan(self.rejected[idx]).any())

    @property
    def filled(self) -> int:
        return int((~torch.isnan(self.chosen) & ~torch.isnan(self.rejected)).sum())

    def fill(self, idx: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        new = int((torch.isnan(self.chosen[idx]) | torch.isnan(self.rejected[idx])).sum())
        self.chosen[idx], self.rejected[idx] = chosen.detach().float().cpu(), rejected.detach().float().cpu()
        self.unsaved += new

    def save(self) -> None:
        """Write the table to `path` (merged with the file's pairs this table lacks), if it has unsaved pairs."""
        if self.path is None or not self.unsaved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.with_name(self.path.name + ".lock")):
            if self.path.exists():
                self._merge(load_file(str(self.path)))
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            os.close(fd)
            save_file({"chosen": self.chosen, "rejected": self.rejected}, tmp)
            os.replace(tmp, self.path)
        self.unsaved = 0


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` for the block (no lock where the OS has no flock)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class PrecomputedReference:
    """Reference log-probs from a table that fills as the run goes: the live reference computes a batch's the first
    time the batch holds a pair the table lacks; later batches, epochs and runs (through the cache file) look them up.
    Once the table holds every pair in `needed` (what the run will still use), the live reference is let go (a frozen
    copy of the model is freed)."""

    name = "precomputed"
    SAVE_EVERY_S = 30.0

    def __init__(self, table: ReferenceTable, live: Reference | None = None, needed: torch.Tensor | None = None):
        self.table, self.live = table, live
        self.needed = needed
        self.computed = 0  # pairs this run computed (the rest came from the cache)
        self._saved_at = time.monotonic()
        self._release_if_covered()

    def logps(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        idx = batch.indices.cpu()
        if not self.table.has(idx):
            if self.live is None:
                raise RuntimeError(f"reference log-probs of pairs {idx.tolist()} are neither cached nor computable (the reference model was released)")
            out = self.live.logps(batch)
            assert out is not None
            self.computed += int(idx.numel())
            self.table.fill(idx, *out)
            if time.monotonic() - self._saved_at > self.SAVE_EVERY_S:
                self.save()
            self._release_if_covered()
        dev = batch.input_ids.device
        return self.table.chosen[idx].to(dev, non_blocking=True), self.table.rejected[idx].to(dev, non_blocking=True)

    def save(self) -> None:
        self.table.save()
        self._saved_at = time.monotonic()

    def _release_if_covered(self) -> None:
        if self.live is not None and self.needed is not None and self.table.has(self.needed):
            self.live = None

    @contextlib.contextmanager
    def as_model(self) -> Iterator[None]:
        yield None  # a table, not a model


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every parameter's bytes (and the adapter state), so a cache never serves another model's numbers."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        if "lora_" in name and f".{REFERENCE_ADAPTER}." not in name:  # the trained adapter is not the reference (a frozen start adapter is)
            continue
        h.update(name.encode())
        p = p.full_tensor() if hasattr(p, "full_tensor") else p  # sharded (FSDP): every process gathers the same
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if p.dtype != torch.bool else p.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def pairs_fingerprint(pairs: Iterable[TokenizedPair]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(repr((p.prompt, p.chosen, p.rejected)).encode())
    return h.hexdigest()[:16]


def default_reference_cache() -> Path:
    return Path(os.environ.get("PREFTUNE_DATA_CACHE") or os.environ.get("PREFTUNE_CACHE") or Path.home() / ".cache" / "preftune") / "reference"


def precompute(reference: Reference, batches: Iterable[PreferenceBatch], table: ReferenceTable, autocast: Any = None,
               on_batch: Callable[[int], None] | None = None) -> int:
    """Fill `table` with the reference log-probs of the pairs in `batches` (the caller picks those the table lacks), with
    the scoring loop, and save it; returns the number of pairs computed."""
    keep = ("ref_logps/chosen", "ref_logps/rejected")
    _, per_pair = score(batches, lambda b: reference_values(reference, b), keep, autocast, on_batch=on_batch)
    if not per_pair:
        return 0
    idx = per_pair["index"].long()
    table.fill(idx, per_pair[keep[0]], per_pair[keep[1]])
    table.save()
    logger.info("reference: log-probs of %d pairs computed%s", idx.numel(), f" and cached at {table.path}" if table.path else "")
    return int(idx.numel())
