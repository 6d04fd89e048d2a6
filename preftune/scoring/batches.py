"""The one scoring path: a batch's loss and per-pair metric values, and the loop that scores a whole split with no
gradients (held-out evaluation in training, `preftune eval`, the reference precompute and iterate all use it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..config import LossConfig
from ..data.batch import PreferenceBatch
from ..losses import LossOutput, compute_weighted
from ..models.logprobs import SequenceLogps, policy_logps
from .metrics import MetricAccumulator, drift_values, pair_metrics

Values = dict[str, torch.Tensor]


class Reference(Protocol):
    """Gives (log πref(chosen), log πref(rejected)), each (B,), for a batch; None when the loss needs no reference."""

    name: str

    def logps(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor] | None: ...

    def as_model(self) -> contextlib.AbstractContextManager[torch.nn.Module | None]:
        """The reference as a model for the duration of a block (to generate from it); None when there is no model."""
        ...


@dataclass(frozen=True)
class LossFunction:
    """The run's loss, chosen once at set-up: its components (name, weight, params), β and normalization."""

    components: tuple[tuple[str, float, dict[str, Any]], ...]
    beta: float | None
    length_normalize: bool
    reference_free: bool

    @classmethod
    def from_config(cls, cfg: LossConfig, beta: float | None = None, reference_free: bool | None = None) -> "LossFunction":
        """The loss of a config's `loss` section; `beta` / `reference_free` replace the section's when given."""
        parts = [(c.name, c.weight, c.params) for c in cfg.components] if cfg.components else [(cfg.name, 1.0, cfg.params)]
        return cls(tuple(parts), cfg.beta if beta is None else beta, cfg.length_normalize,
                   cfg.reference_free if reference_free is None else reference_free)

    def __call__(self, policy: SequenceLogps, reference: tuple[torch.Tensor, torch.Tensor] | None, lengths: torch.Tensor, b: int) -> LossOutput:
        return compute_weighted(list(self.components), beta=self.beta, length_normalize=self.length_normalize, reference_free=self.reference_free,
                                policy_chosen_logps=policy.chosen(b), policy_rejected_logps=policy.rejected(b),
                                reference_chosen_logps=None if reference is None else reference[0],
                                reference_rejected_logps=None if reference is None else reference[1],
                                chosen_lengths=lengths[:b], rejected_lengths=lengths[b:])


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ wᵢ·lossᵢ / Σ wᵢ: a batch's loss with each example weighted (data `weight`, default 1)."""
    w = weights.to(losses.dtype)
    return (losses * w).sum() / w.sum().clamp(min=1e-12)


def loss_on_batch(model: torch.nn.Module, batch: PreferenceBatch, reference: Reference, loss: LossFunction, chunk: int) -> tuple[torch.Tensor, Values]:
    """The weighted mean loss of a batch (with gradients) and its per-pair metric values (each (B,))."""
    policy = policy_logps(model, batch, chunk)
    b = batch.num_pairs
    ref = reference.logps(batch)
    lengths = batch.lengths
    out = loss(policy, ref, lengths, b)
    value = weighted_mean(out.losses, batch.weights)
    values = pair_metrics(out, policy, b)
    values["lengths/chosen_minus_rejected"] = (lengths[:b] - lengths[b:]).float()
    if ref is not None:
        values["ref_logps/chosen"], values["ref_logps/rejected"] = ref[0].detach().float(), ref[1].detach().float()
        values["logratios/chosen"] = values["logps/chosen"] - values["ref_logps/chosen"]
        values["logratios/rejected"] = values["logps/rejected"] - values["ref_logps/rejected"]
        values["drift/abs_logratio"] = drift_values(values["logratios/chosen"], values["logratios/rejected"])
    return value, values


def reference_values(reference: Reference, batch: PreferenceBatch) -> Values:
    """The reference's log-probs of a batch's pairs, as per-pair values (what the precompute pass stores)."""
    out = reference.logps(batch)
    if out is None:
        raise ValueError("reference_values needs a reference that gives log-probs")
    return {"ref_logps/chosen": out[0].float(), "ref_logps/rejected": out[1].float()}


@torch.no_grad()
def score(batches: Iterable[PreferenceBatch], values_of: Callable[[PreferenceBatch], Values], keep: tuple[str, ...] = (),
          autocast: Any = None, gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
          on_batch: Callable[[int], None] | None = None) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Score every batch with `values_of` (e.g. `loss_on_batch`'s values): the mean of each value over all pairs (and
    processes, with accelerate's `gather`), and the per-pair values of `keep` with each pair's data-set `index`, in the
    order scored, on the CPU."""
    acc = MetricAccumulator()
    for batch in batches:
        with autocast() if autocast is not None else contextlib.nullcontext():
            values = values_of(batch)
        acc.add(values, keep)
        if keep:
            acc.per_pair["index"].append(batch.indices)
        if on_batch is not None:
            on_batch(batch.num_pairs)
    per_pair = {k: torch.cat([t.cpu() for t in v]) for k, v in acc.per_pair.items()}
    return acc.reduce(gather), per_pair
