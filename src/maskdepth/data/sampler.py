"""The training batch order: a pure function of (seed, epoch), so a resumed epoch replays the
same batches and can start part-way through, and every DDP rank gets its own equal share."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


class EpochBatches:
    """Batch sampler whose order depends only on (seed, epoch); can start part-way through an epoch.

    Every rank gets the same number of batches (the shuffled order is cut to a multiple of the
    world size, then dealt out rank by rank), so DDP never waits on a rank that has run out.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, shuffle: bool, rank: int = 0, world: int = 1,
                 max_batches: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world, self.max_batches = rank, world, max_batches
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch; `start` batches at its beginning are skipped (already trained on)."""
        self.epoch, self.start = epoch, start

    def _batches(self) -> list[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        per_rank = self.n // self.world if self.shuffle else math.ceil(self.n / self.world)
        mine = order[self.rank :: self.world][:per_rank].tolist()
        size = self.batch_size
        # Training drops the ragged tail (BatchNorm dislikes batches of 1) unless that leaves nothing.
        if self.shuffle and len(mine) >= size:
            mine = mine[: len(mine) // size * size]
        batches = [mine[i : i + size] for i in range(0, len(mine), size)]
        return batches[: self.max_batches] if self.max_batches else batches

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches()[self.start :])


__all__ = ["EpochBatches"]
