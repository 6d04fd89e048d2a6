"""FlexAttention masks (`model.attention: flex`): the prefix-shared / packed masks as block-sparse `BlockMask`s."""

from __future__ import annotations

from typing import Any

import torch

from ..data.batch import PreferenceBatch
from ..errors import ConfigError

IMPLEMENTATIONS = {"sdpa": "sdpa", "flex": "flex_attention"}  # model.attention -> transformers' attn_implementation
_last: list[Any] = [None, None]  # (segment ids, BlockMask) of the latest batch: the policy and a live reference share it


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
        raise ConfigError(f"model.attention: flex needs segment ids, which the {batch.layout} layout has none of. "
                          "Fix: set train.layout: packed (or prefix_shared), or model.attention: sdpa.")
    segment, part = batch.extras["segment"], batch.extras["part"]
    if _last[0] is segment:
        return _last[1]

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        same = (segment[b, q] == segment[b, kv]) & (segment[b, q] >= 0) & (kv <= q)
        rejected_sees_chosen = (part[b, q] == 2) & (part[b, kv] == 1)
        return (same & ~rejected_sees_chosen) | (q == kv)

    rows, length = segment.shape
    _last[:] = segment, create_block_mask(mask_mod, B=rows, H=None, Q_LEN=length, KV_LEN=length, device=segment.device)
    return _last[1]
