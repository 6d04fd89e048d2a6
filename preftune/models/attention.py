"""Attention kernels for the prefix-shared / packed layouts, whose masks let each token see only its own pair:
SDPA with the batch's mask (`experimental.attention: sdpa`), FlexAttention's block-sparse `BlockMask`s (`experimental.attention:
flex`, CUDA), and per-segment attention (`experimental.attention: segments`, any device), which gathers each pair's tokens
and runs SDPA on them alone, so no (query, key) block of two different pairs is computed.

With a layout's boolean mask, SDPA gets one additive float copy of it shared by every layer (given the boolean mask,
SDPA converts it in each layer and keeps each copy for the backward pass), and on CPU grouped-query attention runs
without repeating keys and values per query head (SDPA's `enable_gqa`; transformers repeats them whenever a mask is
given, and the backward pass keeps the repeated copies)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.batch import PreferenceBatch
from ..errors import ConfigError

SEGMENTS = "preftune_segments"
SDPA = "preftune_sdpa"
IMPLEMENTATIONS = {"sdpa": SDPA, "flex": "flex_attention", "segments": SEGMENTS}  # experimental.attention -> transformers' attn_implementation
LAYOUT_KWARG = "preftune_layout"  # the keyword through which a forward pass hands its batch's mask forms to the attention functions


def uses_flex(module: torch.nn.Module) -> bool:
    """Whether a transformers model (or its decoder) runs FlexAttention."""
    return getattr(getattr(module, "config", None), "_attn_implementation", None) == "flex_attention"


def flex_block_mask(batch: PreferenceBatch) -> Any:
    """The batch's attention pattern as a FlexAttention `BlockMask`: a token sees earlier tokens of its own pair segment,
    except that rejected tokens do not see chosen ones; padding sees itself only. Equal to the dense mask of
    `collate_shared`, without materializing rows × length × length booleans, and letting the kernel skip empty blocks.
    Built once per batch: a second call with the same batch returns the same mask."""
    from torch.nn.attention.flex_attention import create_block_mask

    if "segment" not in batch.extras:
        raise ConfigError(f"experimental.attention: flex needs segment ids, which the {batch.layout} layout has none of. "
                          "Fix: set train.layout: packed (or prefix_shared), or experimental.attention: sdpa.")
    if "block_mask" in batch.derived:
        return batch.derived["block_mask"]
    segment, part = batch.extras["segment"], batch.extras["part"]

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        same = (segment[b, q] == segment[b, kv]) & (segment[b, q] >= 0) & (kv <= q)
        rejected_sees_chosen = (part[b, q] == 2) & (part[b, kv] == 1)
        return (same & ~rejected_sees_chosen) | (q == kv)

    rows, length = segment.shape
    batch.derived["block_mask"] = create_block_mask(mask_mod, B=rows, H=None, Q_LEN=length, KV_LEN=length, device=segment.device)
    return batch.derived["block_mask"]


@dataclass
class SegmentPlan:
    """Where each pair segment of a batch lies: `gather` (S, Lmax) positions in the flattened rows (R·L) of each
    segment's tokens, padded with its first; `mask` (S, 1, Lmax, Lmax) its own block of the batch's mask, padding
    seeing itself; `src` / `dest` the real tokens' positions in (S·Lmax) and in (R·L). `source` is the batch mask it
    was built from: attention calls with another mask (generation, other layouts) run plain SDPA."""

    source: torch.Tensor
    gather: torch.Tensor
    mask: torch.Tensor
    src: torch.Tensor
    dest: torch.Tensor


def segment_plan(batch: PreferenceBatch) -> SegmentPlan:
    """The batch's `SegmentPlan` (built once per batch; the policy and a live reference share it)."""
    if "segment_plan" in batch.derived:
        return batch.derived["segment_plan"]
    if "segment" not in batch.extras:
        raise ConfigError(f"experimental.attention: segments needs segment ids, which the {batch.layout} layout has none of. "
                          "Fix: set train.layout: packed (or prefix_shared), or experimental.attention: sdpa.")
    segment = batch.extras["segment"].cpu()
    rows, length = segment.shape
    spans = []  # (row, start, end) of each segment
    for r in range(rows):
        ids = segment[r]
        change = torch.nonzero(ids[1:] != ids[:-1]).flatten() + 1
        bounds = [0, *change.tolist(), length]
        spans += [(r, a, b) for a, b in zip(bounds[:-1], bounds[1:]) if int(ids[a]) >= 0]
    width = max(b - a for _, a, b in spans)
    offsets = torch.arange(width)
    starts = torch.tensor([r * length + a for r, a, _ in spans])
    sizes = torch.tensor([b - a for _, a, b in spans])
    real = offsets[None, :] < sizes[:, None]
    gather = torch.where(real, starts[:, None] + offsets[None, :], starts[:, None])
    dense = batch.attention_mask.cpu()
    mask = torch.zeros(len(spans), 1, width, width, dtype=torch.bool)
    for s, (r, a, b) in enumerate(spans):
        mask[s, 0, :b - a, :b - a] = dense[r, 0, a:b, a:b]
    mask |= torch.eye(width, dtype=torch.bool)  # padding sees itself (no empty softmax row)
    device = batch.attention_mask.device
    plan = SegmentPlan(batch.attention_mask, gather.to(device), mask.to(device), real.flatten().nonzero().flatten().to(device),
                       gather[real].to(device))
    batch.derived["segment_plan"] = plan
    return plan


def segment_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                              **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: (B, H, L, D) queries, keys, values -> (B, L, H, D). With the plan a forward
    pass hands over (`layout_kwargs`) for this mask, each segment's tokens attend among themselves only; otherwise
    plain SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = kwargs.pop(LAYOUT_KWARG, None)
    if not isinstance(plan, SegmentPlan) or attention_mask is not plan.source:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    rows, heads, length, dim = query.shape

    def pick(t: torch.Tensor) -> torch.Tensor:  # (R, h, L, D) -> (S, h, Lmax, D)
        return t.transpose(1, 2).reshape(rows * length, t.shape[1], dim)[plan.gather].transpose(1, 2)

    q, k, v = pick(query), pick(key), pick(value)
    k, v, gqa = grouped_kv(q, k, v)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=plan.mask, dropout_p=dropout if module.training else 0.0,
                                                           scale=scaling, enable_gqa=gqa)
    out = out.transpose(1, 2).reshape(-1, heads, dim)[plan.src]  # (tokens, H, D)
    full = out.new_zeros(rows * length, heads, dim).index_copy(0, plan.dest, out)
    return full.view(rows, length, heads, dim), None


def grouped_kv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Keys and values for a masked SDPA call, and whether to pass `enable_gqa`: on CPU the KV heads as they are (GQA),
    elsewhere repeated to every query head (CUDA's fused kernels take no masked GQA: they would fall back to math)."""
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = query.shape[1] // key.shape[1]
    if groups > 1 and query.device.type != "cpu":
        return repeat_kv(key, groups), repeat_kv(value, groups), False
    return key, value, groups > 1


LAYOUT_READY = {"sdpa", SDPA, "flex_attention", SEGMENTS}  # attention implementations that read a layout's boolean mask


def check_layout_attention(module: torch.nn.Module, layout: str) -> None:
    """Refuse a model whose attention would misread a layout's (R, 1, L, L) boolean mask (transformers' eager attention
    adds it as if it were a float mask, so every token would see every other)."""
    impl = getattr(getattr(module, "config", None), "_attn_implementation", None)
    if impl is not None and impl not in LAYOUT_READY:
        raise ConfigError(f"train.layout: {layout} needs SDPA-family attention, but the model runs attn_implementation={impl!r}. "
                          "Fix: load the model with attn_implementation='sdpa' (preftune's loaders do), or set train.layout: padded.")


@dataclass
class LayoutMask:
    """A batch's (R, 1, L, L) boolean mask and its additive float forms (0 where attended, -inf elsewhere) by dtype,
    each made once per batch and shared by every layer (given the boolean mask, SDPA would convert it in each layer
    and keep each copy for the backward pass)."""

    mask: torch.Tensor
    additive: dict[torch.dtype, torch.Tensor] = field(default_factory=dict)

    def as_additive(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self.additive:
            self.additive[dtype] = torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device).masked_fill_(~self.mask, float("-inf"))
        return self.additive[dtype]


def layout_mask(batch: PreferenceBatch) -> LayoutMask:
    """The batch's `LayoutMask` (built once per batch; the policy and a live reference share it)."""
    if "layout_mask" not in batch.derived:
        batch.derived["layout_mask"] = LayoutMask(batch.attention_mask)
    return batch.derived["layout_mask"]


def layout_kwargs(module: torch.nn.Module, batch: PreferenceBatch) -> dict[str, Any]:
    """What a forward pass of `module` on `batch` hands its attention functions: the segment plan (segments) or the
    shared additive mask (sdpa) of a layout's boolean mask; nothing for the padded layout or FlexAttention."""
    if batch.attention_mask.dim() != 4 or uses_flex(module):
        return {}
    if uses_segments(module):
        return {LAYOUT_KWARG: segment_plan(batch)}
    check_layout_attention(module, batch.layout)
    return {LAYOUT_KWARG: layout_mask(batch)} if uses_layout_sdpa(module) else {}


def layout_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention interface for `experimental.attention: sdpa`: (B, H, L, D) queries, keys, values -> (B, L, H, D).
    With the layout mask a forward pass hands over (`layout_kwargs`): SDPA with its shared additive copy and, on CPU,
    grouped-query attention without repeated keys and values; any other call (generation, other masks) runs
    transformers' SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layout = kwargs.pop(LAYOUT_KWARG, None)
    if not isinstance(layout, LayoutMask) or attention_mask is not layout.mask or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    key, value, gqa = grouped_kv(query, key, value)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=layout.as_additive(query.dtype),
                                                           dropout_p=dropout if module.training else 0.0, scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


def register_attention() -> None:
    """Make preftune's `experimental.attention` kernels (sdpa, segments) known to transformers (attention functions, and SDPA's
    mask for generation)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    for name, fn in ((SEGMENTS, segment_attention_forward), (SDPA, layout_sdpa_forward)):
        AttentionInterface.register(name, fn)
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)


def uses_segments(module: torch.nn.Module) -> bool:
    return getattr(getattr(module, "config", None), "_attn_implementation", None) == SEGMENTS


def uses_layout_sdpa(module: torch.nn.Module) -> bool:
    return getattr(getattr(module, "config", None), "_attn_implementation", None) == SDPA
