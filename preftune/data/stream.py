"""Batches of a tokenized split for one process, and the training stream that owns its position for resume."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .batch import ConsecutiveBatches, LengthGroupedBatches, PreferenceBatch, collate, pair_length
from .tokenize import TokenizedPair


@dataclass
class BatchSource:
    """Deterministic batches of `pairs` for one process: the order depends on (seed, epoch) only, so a resumed run
    sees the same batches as an uninterrupted one. Each global batch holds `batch_size × world` pairs. With `labels`
    (KTO: each example desirable or not, its KL completion in `rejected`), batches are consecutive runs of examples,
    as the KL pairs were built, and carry the labels as `extras["label"]`."""

    pairs: Sequence[TokenizedPair]
    batch_size: int
    seed: int
    shuffle: bool
    pad_id: int
    rank: int = 0
    world: int = 1
    device: torch.device | str = "cpu"
    layout: str = "padded"
    pack_tokens: int = 512
    static: bool = False  # packed rows padded to a multiple of pack_tokens (few shapes, for torch.compile)
    labels: Sequence[bool] | None = None

    def __post_init__(self) -> None:
        size, drop = self.batch_size * self.world, self.world > 1
        self.grouping: LengthGroupedBatches | ConsecutiveBatches = (
            ConsecutiveBatches(len(self.pairs), size, self.seed, shuffle=self.shuffle, drop_last=drop) if self.labels is not None
            else LengthGroupedBatches([pair_length(p) for p in self.pairs], size, self.seed, shuffle=self.shuffle, drop_last=drop))

    def num_batches(self) -> int:
        return len(self.grouping)

    def batch(self, indices: list[int]) -> PreferenceBatch:
        """This process's share of the global batch `indices`, collated in the layout and moved to the device."""
        mine = self.mine(indices)
        batch = collate(self.layout, [self.pairs[i] for i in mine], mine, self.pad_id, self.pack_tokens, self.static)
        if self.labels is not None:
            batch.extras["label"] = torch.tensor([bool(self.labels[i]) for i in mine], dtype=torch.bool)
        return batch.to(self.device)

    def mine(self, indices: list[int]) -> list[int]:
        """This process's share of the global batch `indices`."""
        return indices[self.rank * self.batch_size:(self.rank + 1) * self.batch_size] if self.world > 1 else indices

    def epoch(self, epoch: int, start: int = 0) -> Iterator[PreferenceBatch]:
        """The batches of `epoch` from batch `start` on."""
        for indices in self.grouping.batches(epoch)[start:]:
            yield self.batch(indices)


class BatchStream:
    """The training batches, epoch after epoch; it owns its position (epoch, batch within the epoch), which a
    checkpoint saves and a resumed run restores."""

    def __init__(self, source: BatchSource, epoch: int = 0, batch: int = 0):
        self.source = source
        self.epoch, self.batch = epoch, batch
        self._order: tuple[int, list[list[int]]] | None = None

    def _batches(self) -> list[list[int]]:
        if self._order is None or self._order[0] != self.epoch:
            self._order = (self.epoch, self.source.grouping.batches(self.epoch))
        return self._order[1]

    def _advance(self) -> list[int]:
        batches = self._batches()
        if self.batch >= len(batches):
            self.epoch, self.batch = self.epoch + 1, 0
            batches = self._batches()
        indices = batches[self.batch]
        self.batch += 1
        return indices

    def planned(self, n: int) -> list[list[int]]:
        """The global batches of the next `n` steps' worth of batches, from the current position (which does not move)."""
        epoch, batch, out = self.epoch, self.batch, []
        while len(out) < n:
            batches = self.source.grouping.batches(epoch)
            out += batches[batch:batch + n - len(out)]
            epoch, batch = epoch + 1, 0
            if not batches:
                break
        return out

    def next(self) -> PreferenceBatch:
        """The next batch; the position moves past it."""
        return self.source.batch(self._advance())

    def skip(self, n: int) -> list[int]:
        """Move past the next `n` batches without computing them (the rest of a step that failed); their global pair indices."""
        return [i for _ in range(n) for i in self._advance()]

    @property
    def progress(self) -> float:
        """Epochs done, as a fraction (2.5: half-way through the third epoch)."""
        return self.epoch + self.batch / max(1, self.source.num_batches())

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch}
