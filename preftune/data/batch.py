"""Batches of tokenized pairs in a layout-independent form, the padded collator, and a length-grouped sampler.

A batch names its response tokens as a flat list: for token t, the logits at (`rows[t]`, `cols[t]`)
predict `labels[t]`, which belongs to sequence slot `seq[t]` (pair i's chosen response is slot i,
its rejected response slot B + i). Log-probabilities are computed from that list alone, so a layout
(padded, packed, prefix-shared) only changes how rows are built, never the loss or the loop.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any
from dataclasses import dataclass, field, replace

import torch

from .tokenize import TokenizedPair


@dataclass
class PreferenceBatch:
    """Model inputs plus the response-token index of B pairs (2B sequence slots)."""

    input_ids: torch.Tensor          # (R, L)
    attention_mask: torch.Tensor     # (R, L) padding mask, or (R, 1, L, L) boolean mask for custom layouts
    position_ids: torch.Tensor       # (R, L)
    rows: torch.Tensor               # (T,)
    cols: torch.Tensor               # (T,)
    labels: torch.Tensor             # (T,)
    seq: torch.Tensor                # (T,) in [0, 2B)
    num_pairs: int
    weights: torch.Tensor            # (B,)
    indices: torch.Tensor            # (B,) position of each pair in the data set
    layout: str = "padded"
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. precomputed reference log-probs
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # forms of the mask built once (models.attention)

    @property
    def lengths(self) -> torch.Tensor:
        """(2B,) response token counts: chosen slots first, then rejected (without waiting for the device, unlike bincount)."""
        return torch.zeros(2 * self.num_pairs, dtype=torch.long, device=self.seq.device).index_add_(0, self.seq, torch.ones_like(self.seq))

    def token_count(self) -> torch.Tensor:
        """Tokens the model computes (non-padding positions), as a scalar tensor on the batch's device."""
        return self.attention_mask.sum() if self.attention_mask.dim() == 2 else self.extras["valid"].sum()

    def to(self, device: torch.device | str) -> "PreferenceBatch":
        """The batch on `device`; `indices` (data-set positions, read on the host) stay where they are. Copies to a
        CUDA device go through pinned memory without blocking the host."""
        device = torch.device(device)
        pin = device.type == "cuda"
        move = lambda t: (t.pin_memory() if pin and t.device.type == "cpu" else t).to(device, non_blocking=True)  # noqa: E731
        return replace(self, input_ids=move(self.input_ids), attention_mask=move(self.attention_mask), position_ids=move(self.position_ids),
                       rows=move(self.rows), cols=move(self.cols), labels=move(self.labels), seq=move(self.seq),
                       weights=move(self.weights), extras={k: move(v) for k, v in self.extras.items()}, derived={})


def collate_padded(pairs: Sequence[TokenizedPair], indices: Sequence[int], pad_id: int) -> PreferenceBatch:
    """Stack each pair's [prompt|chosen] rows, then its [prompt|rejected] rows, right-padded to the longest."""
    b = len(pairs)
    seqs = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    resp_start = [len(p.prompt) for p in pairs] * 2
    length = max(len(s) for s in seqs)
    ids = torch.full((2 * b, length), pad_id, dtype=torch.long)
    mask = torch.zeros((2 * b, length), dtype=torch.long)
    rows, cols, labels, seq = [], [], [], []
    for r, (s, start) in enumerate(zip(seqs, resp_start)):
        ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, : len(s)] = 1
        n = len(s) - start
        rows.extend([r] * n)
        cols.extend(range(start - 1, len(s) - 1))
        labels.extend(s[start:])
        seq.extend([r] * n)
    if any(c < 0 for c in cols):
        raise ValueError("a response starts at position 0: every sequence needs at least one prompt token (BOS or text) before its response")
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    return PreferenceBatch(ids, mask, position_ids, torch.tensor(rows), torch.tensor(cols), torch.tensor(labels), torch.tensor(seq), b,
                           torch.tensor([p.weight for p in pairs], dtype=torch.float32), torch.tensor(list(indices), dtype=torch.long))


class LengthGroupedBatches:
    """Batches of indices whose pairs have similar lengths, in a shuffled order that is fixed by (seed, epoch).

    Indices are shuffled, cut into mega-batches of `group` batches, sorted by length inside each, cut into
    batches, and the batches shuffled: padding falls while the order stays random across the data set.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, shuffle: bool = True, group: int = 50, drop_last: bool = False):
        self.lengths, self.batch_size, self.seed, self.shuffle, self.group, self.drop_last = list(lengths), batch_size, seed, shuffle, group, drop_last

    def batches(self, epoch: int) -> list[list[int]]:
        idx = list(range(len(self.lengths)))
        rng = random.Random(self.seed * 1_000_003 + epoch)
        if self.shuffle:
            rng.shuffle(idx)
            mega = self.batch_size * self.group
            idx = [i for k in range(0, len(idx), mega) for i in sorted(idx[k:k + mega], key=lambda i: -self.lengths[i])]
        out = [idx[k:k + self.batch_size] for k in range(0, len(idx), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        if self.shuffle:
            rng.shuffle(out)
        return out

    def __len__(self) -> int:
        n = len(self.lengths) // self.batch_size
        return n if self.drop_last or len(self.lengths) % self.batch_size == 0 else n + 1


class ConsecutiveBatches:
    """Batches of consecutive indices, in an order of batches shuffled by (seed, epoch): each batch is a fixed set of
    examples (KTO's KL pairs are built within it), while the order across the data set changes every epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = False):
        self.n, self.batch_size, self.seed, self.shuffle, self.drop_last = n, batch_size, seed, shuffle, drop_last

    def batches(self, epoch: int) -> list[list[int]]:
        out = [list(range(k, min(k + self.batch_size, self.n))) for k in range(0, self.n, self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(out)
        return out

    def __len__(self) -> int:
        n = self.n // self.batch_size
        return n if self.drop_last or self.n % self.batch_size == 0 else n + 1


def pair_length(p: TokenizedPair) -> int:
    return len(p.prompt) + max(len(p.chosen), len(p.rejected))


EXACT_SEGMENTS = 12  # batches up to this many segments get an exhaustive search for the fewest rows


def pack_rows(lengths: Sequence[int], row_tokens: int, search_nodes: int = 20_000) -> list[list[int]]:
    """Segments (by position in `lengths`) grouped into rows of at most `row_tokens` tokens (or the longest segment,
    where that is longer). For each row count from the lower bound up: the longest-first balanced split (each segment
    onto the least-filled row, so the longest row, to which all are padded, stays close to the mean) when it fits, else
    first-fit-decreasing, else, for up to `EXACT_SEGMENTS` segments, an exhaustive search (at most `search_nodes`
    steps): the fewest rows for such batches; above that, the best of the two heuristics."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    cap = max(row_tokens, max(lengths))
    n = max(1, -(-sum(lengths) // cap), sum(2 * x > cap for x in lengths))  # segments over half a row never share one
    while True:
        for rows in (_balanced(order, lengths, n), _first_fit(order, lengths, n, cap)):
            if rows is not None and max(sum(lengths[i] for i in row) for row in rows) <= cap:
                return [row for row in rows if row]
        found = _exact(order, lengths, n, cap, search_nodes) if len(lengths) <= EXACT_SEGMENTS else None
        if found is not None:
            return [row for row in found if row]
        n += 1


def _first_fit(order: list[int], lengths: Sequence[int], n: int, cap: int) -> list[list[int]] | None:
    rows: list[list[int]] = [[] for _ in range(n)]
    load = [0] * n
    for i in order:
        r = next((r for r in range(n) if load[r] + lengths[i] <= cap), None)
        if r is None:
            return None
        rows[r].append(i)
        load[r] += lengths[i]
    return rows


def _balanced(order: list[int], lengths: Sequence[int], n: int) -> list[list[int]]:
    rows: list[list[int]] = [[] for _ in range(n)]
    load = [0] * n
    for i in order:
        r = min(range(n), key=load.__getitem__)
        rows[r].append(i)
        load[r] += lengths[i]
    return rows


def _exact(order: list[int], lengths: Sequence[int], n: int, cap: int, budget: int) -> list[list[int]] | None:
    """An assignment of the segments (longest first) to `n` rows of at most `cap` tokens, or None when there is none or
    the search ran out of `budget` steps."""
    rows: list[list[int]] = [[] for _ in range(n)]
    load = [0] * n
    steps = 0

    def place(k: int) -> bool:
        nonlocal steps
        if k == len(order):
            return True
        steps += 1
        if steps > budget:
            return False
        i, tried = order[k], set()
        for r in range(n):
            if load[r] in tried or load[r] + lengths[i] > cap:
                continue  # rows with the same load are interchangeable
            tried.add(load[r])
            rows[r].append(i)
            load[r] += lengths[i]
            if place(k + 1):
                return True
            rows[r].pop()
            load[r] -= lengths[i]
        return False

    return rows if place(0) else None


def collate_shared(pairs: Sequence[TokenizedPair], indices: Sequence[int], pad_id: int, row_tokens: int | None = None,
                   static: bool = False) -> PreferenceBatch:
    """Each pair as one segment [prompt | chosen | rejected]: the prompt is computed once for both responses.

    Rejected tokens do not see chosen tokens, and their position ids restart where the prompt ends, so each
    response sees exactly [prompt | itself]. With `row_tokens`, segments are packed several to a row
    (`pack_rows`) with block-diagonal masks, so little padding is computed; without it, one pair per row (the
    prefix-shared layout). `static` pads the rows to a multiple of `row_tokens`, so batches come in few shapes.
    """
    b = len(pairs)
    seg_len = [len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs]
    rows_of = [[i] for i in range(b)] if row_tokens is None else pack_rows(seg_len, row_tokens)
    length = max(sum(seg_len[i] for i in row) for row in rows_of)
    if static and row_tokens is not None:
        length = -(-length // row_tokens) * row_tokens
    n_rows = len(rows_of)
    ids = torch.full((n_rows, length), pad_id, dtype=torch.long)
    pos = torch.zeros((n_rows, length), dtype=torch.long)
    mask = torch.zeros((n_rows, 1, length, length), dtype=torch.bool)
    valid = torch.zeros((n_rows, length), dtype=torch.bool)
    segment = torch.full((n_rows, length), -1, dtype=torch.int32)  # pair segment of each token within its row; -1 padding
    part = torch.zeros((n_rows, length), dtype=torch.int8)         # 0 prompt, 1 chosen, 2 rejected
    rows, cols, labels, seq = [], [], [], []
    for r, members in enumerate(rows_of):
        start = 0
        for k, i in enumerate(members):
            p, c, j = pairs[i].prompt, pairs[i].chosen, pairs[i].rejected
            lp, lc, lr = len(p), len(c), len(j)
            if lp == 0:
                raise ValueError("a pair has an empty prompt: every sequence needs at least one prompt token (BOS or text) before its response")
            end = start + lp + lc + lr
            ids[r, start:end] = torch.tensor(p + c + j, dtype=torch.long)
            pos[r, start:end] = torch.cat([torch.arange(lp + lc), torch.arange(lp, lp + lr)])
            block = torch.tril(torch.ones(end - start, end - start, dtype=torch.bool))
            block[lp + lc:, lp:lp + lc] = False  # rejected does not see chosen
            mask[r, 0, start:end, start:end] = block
            valid[r, start:end] = True
            segment[r, start:end] = k
            part[r, start + lp:start + lp + lc], part[r, start + lp + lc:end] = 1, 2
            p_last = start + lp - 1
            rows += [r] * (lc + lr)
            cols += [p_last, *range(start + lp, start + lp + lc - 1)] + ([p_last, *range(start + lp + lc, start + lp + lc + lr - 1)] if lr else [])
            labels += c + j
            seq += [i] * lc + [b + i] * lr
            start = end
        idx = torch.arange(start, length)
        mask[r, 0, idx, idx] = True  # padding attends to itself only (no empty softmax rows)
    return PreferenceBatch(ids, mask, pos, torch.tensor(rows), torch.tensor(cols), torch.tensor(labels), torch.tensor(seq), b,
                           torch.tensor([p.weight for p in pairs], dtype=torch.float32), torch.tensor(list(indices), dtype=torch.long),
                           layout="packed" if row_tokens is not None else "prefix_shared",
                           extras={"valid": valid, "segment": segment, "part": part})


LAYOUTS = ("padded", "prefix_shared", "packed")


def collate(layout: str, pairs: Sequence[TokenizedPair], indices: Sequence[int], pad_id: int, row_tokens: int = 512,
            static: bool = False) -> PreferenceBatch:
    """The batch of `pairs` in the named layout (`static`: packed rows padded to a multiple of `row_tokens`)."""
    if layout == "padded":
        return collate_padded(pairs, indices, pad_id)
    if layout == "prefix_shared":
        return collate_shared(pairs, indices, pad_id)
    if layout == "packed":
        return collate_shared(pairs, indices, pad_id, row_tokens, static)
    raise ValueError(f"unknown layout {layout!r}; valid: {LAYOUTS}")
