"""DeepSpeed ZeRO-1/2 checkpoints in torch's AdamW format: each process holds a slice of every parameter group's flat
optimizer state; a checkpoint gathers the slices into one state per parameter (the same file a one-process run writes,
so a run resumes on any number of processes), and resuming cuts each process's slice back out."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

STATE_KEYS = ("exp_avg", "exp_avg_sq")


def _zero(optimizer: Any) -> Any:
    """DeepSpeed's ZeRO optimizer behind accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def _layout(zo: Any, g: int) -> list[tuple[torch.nn.Parameter, int]]:
    """Group g's parameters in their optimizer order, each with its offset in the group's flat buffer."""
    ordered = zo.round_robin_bit16_groups[g]
    offsets = getattr(zo, "round_robin_bit16_offsets", None)
    if offsets is None:  # contiguous
        starts, at = [], 0
        for p in ordered:
            starts.append(at)
            at += p.numel()
    else:
        starts = offsets[g]
    where = {id(p): s for p, s in zip(ordered, starts, strict=True)}
    return [(p, where[id(p)]) for p in zo.bit16_groups[g]]


def full_optimizer_state(optimizer: Any) -> dict[str, Any]:
    """The whole optimizer state as torch's AdamW `state_dict()` (every process must call this; all get the result)."""
    zo = _zero(optimizer)
    inner = zo.optimizer
    state: dict[int, dict[str, torch.Tensor]] = {}
    groups: list[dict[str, Any]] = []
    index = 0
    for g, part in enumerate(zo.single_partition_of_fp32_groups):
        group = zo.real_dp_process_group[g]
        mine = inner.state.get(part, {})
        full = {}
        for key in STATE_KEYS:
            local = mine[key] if key in mine else torch.zeros_like(part)
            pieces = [torch.empty_like(local) for _ in range(dist.get_world_size(group=group))]
            dist.all_gather(pieces, local.contiguous(), group=group)
            full[key] = torch.cat(pieces)
        ids = []
        for p, start in _layout(zo, g):
            if "step" in mine:
                state[index] = {"step": mine["step"].clone() if torch.is_tensor(mine["step"]) else torch.tensor(float(mine["step"])),
                                **{k: full[k][start:start + p.numel()].view_as(p).clone() for k in STATE_KEYS}}
            ids.append(index)
            index += 1
        groups.append({**{k: v for k, v in inner.param_groups[g].items() if k != "params"}, "params": ids})
    return {"state": state, "param_groups": groups}


def load_full_optimizer_state(optimizer: Any, saved: dict[str, Any]) -> None:
    """Give each process its slice of a state written by `full_optimizer_state` (or by a one-process run), and refresh
    DeepSpeed's master weights from the model's (which the checkpoint's weights were loaded into)."""
    zo = _zero(optimizer)
    inner = zo.optimizer
    zo.refresh_fp32_params()
    index = 0
    for g, part in enumerate(zo.single_partition_of_fp32_groups):
        group = zo.real_dp_process_group[g]
        rank, size = dist.get_rank(group=group), part.numel()
        layout = _layout(zo, g)
        hyper = saved["param_groups"][g]
        inner.param_groups[g].update({k: v for k, v in hyper.items() if k != "params"})
        entries = [saved["state"].get(index + j, saved["state"].get(str(index + j))) for j in range(len(layout))]
        index += len(layout)
        if any(e is None for e in entries):
            continue  # no step taken yet
        flat = {k: torch.zeros(size * dist.get_world_size(group=group), dtype=part.dtype) for k in STATE_KEYS}
        for (p, start), e in zip(layout, entries, strict=True):
            for k in STATE_KEYS:
                flat[k][start:start + p.numel()] = e[k].reshape(-1).to(part.dtype)
        step = entries[0]["step"]
        inner.state[part] = {"step": step.clone() if torch.is_tensor(step) else torch.tensor(float(step)),
                             **{k: flat[k][rank * size:(rank + 1) * size].clone().to(part.device) for k in STATE_KEYS}}
