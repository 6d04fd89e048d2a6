"""What a run trains, behind one protocol: the loss of a batch with its per-pair values, and the step's metrics from
their reduction. A pair loss of the registry, KTO, or SFT's NLL; set-up picks one with `choose_objective`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..config import RunConfig
from ..data.batch import PreferenceBatch
from . import kto, sft
from ..scoring.batches import LossFunction, Reference, Values, loss_on_batch


class Objective(Protocol):
    """A run's objective: `on_batch` gives the batch's weighted mean loss (with gradients) and its per-pair values;
    `summarize` turns the values reduced over a step (or a held-out split) into the logged metrics. What set-up and
    the run decide from it: `uses_reference` (a reference is built), `counts_top1` (the forward pass counts tokens
    that are the model's most likely), `diagnoses` (DPO's failure-mode detectors run), `samples` (held-out greedy
    answers are written as the run goes), `eval_pairs` (each held-out pair's margin and rewards are kept)."""

    uses_reference: bool
    counts_top1: bool
    diagnoses: bool
    samples: bool
    eval_pairs: bool

    def on_batch(self, model: torch.nn.Module, batch: PreferenceBatch, reference: Reference, chunk: int) -> tuple[torch.Tensor, Values]: ...

    def summarize(self, metrics: dict[str, float]) -> dict[str, float]: ...


@dataclass(frozen=True)
class PairObjective:
    """A pair loss of the registry (DPO and its family); the metrics are the values' means, as TRL names them."""

    loss: LossFunction
    uses_reference: bool = True
    counts_top1: bool = False
    diagnoses: bool = True
    samples: bool = False
    eval_pairs: bool = True

    def on_batch(self, model: torch.nn.Module, batch: PreferenceBatch, reference: Reference, chunk: int) -> tuple[torch.Tensor, Values]:
        return loss_on_batch(model, batch, reference, self.loss, chunk)

    def summarize(self, metrics: dict[str, float]) -> dict[str, float]:
        return dict(metrics)


@dataclass(frozen=True)
class KTOObjective:
    """KTO on unpaired (or split) examples; metrics per label, as TRL's KTOTrainer names them."""

    loss: kto.KTOLoss
    uses_reference: bool = True
    counts_top1: bool = False
    diagnoses: bool = True
    samples: bool = False
    eval_pairs: bool = False

    def on_batch(self, model: torch.nn.Module, batch: PreferenceBatch, reference: Reference, chunk: int) -> tuple[torch.Tensor, Values]:
        return kto.kto_on_batch(model, batch, reference, self.loss, chunk)

    def summarize(self, metrics: dict[str, float]) -> dict[str, float]:
        return kto.summarize(metrics)


@dataclass(frozen=True)
class SFTObjective:
    """Supervised fine-tuning: the token-mean NLL of completions; no reference, no DPO diagnostics, its token accuracy
    counted and greedy samples written."""

    uses_reference: bool = False
    counts_top1: bool = True
    diagnoses: bool = False
    samples: bool = True
    eval_pairs: bool = False

    def on_batch(self, model: torch.nn.Module, batch: PreferenceBatch, reference: Reference, chunk: int) -> tuple[torch.Tensor, Values]:
        return sft.nll_on_batch(model, batch, chunk)

    def summarize(self, metrics: dict[str, float]) -> dict[str, float]:
        return sft.summarize(metrics)


def choose_objective(cfg: RunConfig, gather: Any = None) -> Objective:
    """The run's objective: SFT's NLL (stage sft), KTO (an unpaired loss), or a pair loss of the registry. `gather`
    averages KTO's KL reference point across processes."""
    if cfg.stage == "sft":
        return SFTObjective()
    if cfg.loss.unpaired():
        return KTOObjective(kto.KTOLoss.from_config(cfg.loss, gather=gather))
    return PairObjective(LossFunction.from_config(cfg.loss), uses_reference=cfg.loss.uses_reference())
