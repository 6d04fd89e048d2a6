"""The four reference-model strategies, chosen once at set-up: separate, adapter_disabled, precomputed, none."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from ..data.batch import PreferenceBatch
from ..data.tokenize import TokenizedPair
from ..models.logprobs import sequence_logps
from .scoring import reference_values, score

logger = logging.getLogger("preftune.training")


class Reference(Protocol):
    """Gives (log πref(chosen), log πref(rejected)), each (B,), for a batch; None when the loss needs no reference."""

    name: str

    def logps(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor] | None: ...

    def as_model(self) -> contextlib.AbstractContextManager[torch.nn.Module | None]:
        """The reference as a model for the duration of a block (to generate from it); None when there is no model."""
        ...


class ModelReference:
    """A reference that is a model: its log-probs are the model's, taken inside `as_model` (which subclasses define)."""

    name = "model"
    chunk: int

    @torch.no_grad()
    def logps(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        with self.as_model() as model:
            s = sequence_logps(model, batch, self.chunk)
        return s.chosen(batch.num_pairs), s.rejected(batch.num_pairs)

    def as_model(self) -> contextlib.AbstractContextManager[torch.nn.Module]:
        raise NotImplementedError


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


class PrecomputedReference:
    """Reference log-probs looked up by pair index from a table computed once (see `precompute`)."""

    name = "precomputed"

    def __init__(self, chosen: torch.Tensor, rejected: torch.Tensor):
        self.chosen, self.rejected = chosen, rejected

    def logps(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        idx = batch.indices.to(self.chosen.device)
        dev = batch.input_ids.device
        return self.chosen[idx].to(dev, non_blocking=True), self.rejected[idx].to(dev, non_blocking=True)

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
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if p.dtype != torch.bool else p.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def pairs_fingerprint(pairs: Iterable[TokenizedPair]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(repr((p.prompt, p.chosen, p.rejected)).encode())
    return h.hexdigest()[:16]


def default_reference_cache() -> Path:
    return Path(os.environ.get("PREFTUNE_DATA_CACHE") or os.environ.get("PREFTUNE_CACHE") or Path.home() / ".cache" / "preftune") / "reference"


def precompute(reference: Reference, batches: Iterable[PreferenceBatch], n_pairs: int, key: str, cache_dir: Path | None,
               autocast: Any = None) -> PrecomputedReference:
    """Compute (or reload) the reference log-probs of every pair with the scoring loop; the table is saved under `key`."""
    folder = cache_dir or default_reference_cache()
    path = folder / f"{key}.safetensors"
    if path.exists():
        t = load_file(str(path))
        logger.info("reference: log-probs loaded from cache %s", path)
        return PrecomputedReference(t["chosen"], t["rejected"])
    keep = ("ref_logps/chosen", "ref_logps/rejected")
    _, per_pair = score(batches, lambda b: reference_values(reference, b), keep, autocast)
    chosen = torch.full((n_pairs,), float("nan"), dtype=torch.float32)
    rejected = torch.full((n_pairs,), float("nan"), dtype=torch.float32)
    if per_pair:
        idx = per_pair["index"].long()
        chosen[idx], rejected[idx] = per_pair[keep[0]].float(), per_pair[keep[1]].float()
    if torch.isnan(chosen).any() or torch.isnan(rejected).any():
        raise RuntimeError("reference precompute left pairs without log-probs (batches did not cover the data)")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    save_file({"chosen": chosen, "rejected": rejected}, tmp)
    os.replace(tmp, path)
    logger.info("reference: log-probs of %d pairs cached at %s", n_pairs, path)
    return PrecomputedReference(chosen, rejected)
