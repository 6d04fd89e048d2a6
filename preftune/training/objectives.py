"""What a run trains, behind one protocol: the loss of a batch with its per-pair values, and the step's metrics from
their reduction. A pair loss of the registry, KTO, or SFT's NLL; set-up picks one with `choose_objective`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..config import RunConfig
from ..data.batch import PreferenceBatch
from . import kto, scoring, sft
from ..scoring.batches import LossFunction, Reference, Values


class Objective(Protocol):
    """A run's objective: `on_batch` gives the batch's weighted mean loss (with gradients) and its per-pair values;
    `summarize` turns the values reduced over a step (or a held-out split) into the logged metrics."""

    def on_batch(self, model: torch.nn.Module, batch: PreferenceBatch, reference: Reference, chunk: int) -> tuple[torch.Tensor, Values]: ...

    def summarize(self, metrics: dict[str, float]) -> dict[str, float]: ...


@dataclass(frozen=True)
class PairObjective:
    """A pair loss of the registry (DPO and its family); the metrics are the values' means, as TRL names them."""

    loss: LossFunction

    def on_batch(self, model: torch.nn.Module, batch: PreferenceBatch, reference: Reference, chunk: int) -> tuple[torch.Tensor, Values]:
        return scoring.loss_on_batch(model, batch, reference, self.loss, chunk)

    def summarize(self, metrics: dict[str, float]) -> dict[str, float]:
        return dict(metrics)


@dataclass(frozen=True)
class KTOObjective:
    """KTO on unpaired (or split) examples; metrics per label, as TRL's KTOTrainer names them."""

    loss: kto.KTOLoss

    def on_batch(self, model: torch.nn.Module, batch: PreferenceBatch, reference: Reference, chunk: int) -> tuple[torch.Tensor, Values]:
        return kto.kto_on_batch(model, batch, reference, self.loss, chunk)

    def summarize(self, metrics: dict[str, float]) -> dict[str, float]:
        return kto.summarize(metrics)


@dataclass(frozen=True)
class SFTObjective:
    """Supervised fine-tuning: the token-mean NLL of completions; no reference."""

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
    return PairObjective(LossFunction.from_config(cfg.loss))
