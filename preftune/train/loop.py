"""One optimizer step and one evaluation pass: the body of training, independent of set-up."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..config import LossConfig
from ..data.batch import LengthGroupedBatches, PreferenceBatch, collate
from ..data.prepare import TokenizedSplit
from ..errors import PreftuneError
from ..losses import LossOutput, compute_weighted
from ..models.logprobs import policy_logps
from .checkpoint import TrainState
from .metrics import MetricAccumulator, drift_values, pair_metrics
from .reference import Reference


class NonFiniteLoss(PreftuneError):
    """The loss or gradients became NaN/inf; names the step and the pairs of the step's batches (`indices`)."""

    def __init__(self, message: str, step: int, indices: list[int]):
        super().__init__(message)
        self.step = step
        self.indices = indices


def any_process(flag: bool, accelerator: Any) -> bool:
    """`flag` on any process (one small collective when distributed, so every rank takes the same branch)."""
    if accelerator.num_processes == 1:
        return flag
    total = accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), reduction="sum")
    return bool(total.item() > 0)


def _all_finite(loss: torch.Tensor, accelerator: Any) -> bool:
    """Whether the loss is finite on every process."""
    return not any_process(not bool(torch.isfinite(loss.detach()).all()), accelerator)


@dataclass
class BatchSource:
    """Deterministic batches of one split for one process: the order depends on (seed, epoch) only, so a resumed run
    sees the same batches as an uninterrupted one."""

    split: TokenizedSplit
    batch_size: int
    seed: int
    shuffle: bool
    pad_id: int
    rank: int = 0
    world: int = 1
    device: torch.device | str = "cpu"
    layout: str = "padded"
    pack_tokens: int = 512

    def __post_init__(self) -> None:
        from ..data.batch import pair_length

        self.grouping = LengthGroupedBatches([pair_length(p) for p in self.split.pairs], self.batch_size * self.world, self.seed,
                                             shuffle=self.shuffle, drop_last=self.world > 1)

    def num_batches(self) -> int:
        return len(self.grouping)

    def batch(self, indices: list[int]) -> PreferenceBatch:
        mine = indices[self.rank * self.batch_size:(self.rank + 1) * self.batch_size] if self.world > 1 else indices
        return collate(self.layout, [self.split.pairs[i] for i in mine], mine, self.pad_id, self.pack_tokens).to(self.device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[PreferenceBatch]:
        for indices in self.grouping.batches(epoch)[start:]:
            yield self.batch(indices)


def loss_on_batch(model: torch.nn.Module, batch: PreferenceBatch, reference: Reference, loss_cfg: LossConfig, chunk: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted mean loss of a batch (with gradients) and its per-pair metric values."""
    policy = policy_logps(model, batch, chunk)
    b = batch.num_pairs
    ref = reference.logps(batch)
    lengths = batch.lengths
    components = [(c.name, c.weight, c.params) for c in loss_cfg.components] if loss_cfg.components else [(loss_cfg.name, 1.0, loss_cfg.params)]
    out: LossOutput = compute_weighted(components, beta=loss_cfg.beta, length_normalize=loss_cfg.length_normalize, reference_free=loss_cfg.reference_free,
                                       policy_chosen_logps=policy.chosen(b), policy_rejected_logps=policy.rejected(b),
                                       reference_chosen_logps=None if ref is None else ref[0], reference_rejected_logps=None if ref is None else ref[1],
                                       chosen_lengths=lengths[:b], rejected_lengths=lengths[b:])
    w = batch.weights.to(out.losses.dtype)
    loss = (out.losses * w).sum() / w.sum().clamp(min=1e-12)
    values = pair_metrics(out, policy, b)
    values["lengths/chosen_minus_rejected"] = (lengths[:b] - lengths[b:]).float()
    if ref is not None:
        values["ref_logps/chosen"], values["ref_logps/rejected"] = ref[0].detach().float(), ref[1].detach().float()
        values["drift/abs_logratio"] = drift_values(values["logps/chosen"] - values["ref_logps/chosen"], values["logps/rejected"] - values["ref_logps/rejected"])
    return loss, values


def optimizer_step(model: torch.nn.Module, batches: Iterator[PreferenceBatch], grad_accum: int, reference: Reference, loss_cfg: LossConfig,
                   chunk: int, accelerator: Any, optimizer: torch.optim.Optimizer, scheduler: Any, max_grad_norm: float | None,
                   state: TrainState, advance: Callable[[], None]) -> dict[str, float]:
    """Run `grad_accum` micro-batches, clip, step; returns the step's metrics (means over all pairs and processes)."""
    acc = MetricAccumulator()
    indices: list[int] = []
    for micro in range(grad_accum):
        batch = next(batches)
        indices += batch.indices.tolist()
        sync = micro == grad_accum - 1
        ctx = accelerator.no_sync(model) if (not sync and accelerator.num_processes > 1) else contextlib.nullcontext()
        with ctx:
            with accelerator.autocast():  # the reference's forward too runs in the run's mixed precision
                loss, values = loss_on_batch(model, batch, reference, loss_cfg, chunk)
            if not _all_finite(loss, accelerator):
                advance()
                for _ in range(micro + 1, grad_accum):  # the rest of the step's batches go with it
                    indices += next(batches).indices.tolist()
                    advance()
                optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLoss(f"step {state.step + 1}: the loss is {loss.item()} on the batch of pairs {batch.indices.tolist()} "
                                    "(data-set positions). Try a lower learning rate or check those pairs.", state.step + 1, indices)
            accelerator.backward(loss / grad_accum)
        acc.add(values)
        acc.add_total("num_tokens", batch.token_count())
        advance()
    grad_norm = _clip(model, accelerator, max_grad_norm)
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(f"step {state.step + 1}: the gradient norm is {grad_norm} on the pairs {indices} (data-set positions). "
                            "Try a lower learning rate or check those pairs.", state.step + 1, indices)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    metrics = acc.reduce(accelerator.gather if accelerator.num_processes > 1 else None, count_key="num_pairs")
    return metrics | {"grad_norm": grad_norm, "learning_rate": lr}


@torch.no_grad()
def evaluate(model: torch.nn.Module, source: BatchSource, reference: Reference, loss_cfg: LossConfig, chunk: int, accelerator: Any,
             keep: tuple[str, ...] = ()) -> tuple[dict[str, float], MetricAccumulator]:
    """Means of every metric over the held-out split, prefixed `eval/`; the accumulator keeps per-pair values of `keep`."""
    was_training = model.training
    model.eval()
    acc = MetricAccumulator()
    for batch in source.epoch(0):
        with accelerator.autocast():
            _, values = loss_on_batch(model, batch, reference, loss_cfg, chunk)
        acc.add(values, keep)
        if keep:
            acc.per_pair["index"].append(batch.indices)
    if was_training:
        model.train()
    means = acc.reduce(accelerator.gather if accelerator.num_processes > 1 else None)
    return {f"eval/{k}": v for k, v in means.items()}, acc


def _clip(model: torch.nn.Module, accelerator: Any, max_norm: float | None) -> float:
    params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    if max_norm is not None:
        return float(accelerator.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([p.grad.detach().float().norm() for p in params]))) if params else 0.0

