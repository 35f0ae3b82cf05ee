"""Mixing real and synthetic samples in every batch.

The SRA loss pulls synthetic features towards prototypes kept in a memory bank of *real* features; a batch
without real samples feeds the bank nothing. So each per-process batch holds a fixed number of synthetic
samples, round(batch * ratio), capped so that at least `min_real` real samples remain.

The batch of iteration `it` is a pure function of (seed, it, rank): each kind (real, synthetic) is read as
an endless stream of per-epoch permutations, and position p of the stream is computed directly. Resuming at
iteration k therefore yields exactly the batches an uninterrupted run would have seen, with no state to save;
ranks read disjoint positions of the same permutations, so a distributed epoch covers each sample once.
Each item is (dataset index, augmentation seed), so augmentations are reproducible too, whichever worker
process maps them.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np

REAL, SYNTHETIC = 0, 1


def split_batch(batch_size: int, ratio: float, num_real: int, num_synthetic: int, min_real: int) -> tuple[int, int]:
    """(real, synthetic) samples per process batch; raises with what to change when impossible."""
    if batch_size < 1:
        raise ValueError("the per-process batch size must be at least 1 (SOLVER.IMS_PER_BATCH / processes)")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"DATASETS.SYNTHETIC.RATIO must be in [0, 1], not {ratio}")
    if num_real + num_synthetic == 0:
        raise ValueError("no training data: set DATASETS.TRAIN and/or DATASETS.SYNTHETIC.IDS")
    if num_synthetic == 0:
        return batch_size, 0
    if num_real == 0:
        if min_real > 0:
            raise ValueError(
                "only synthetic training data: the SRA memory bank needs real samples. Add a real dataset "
                "to DATASETS.TRAIN, or set DATALOADER.MIN_REAL_PER_BATCH 0 (SRA then never applies)"
            )
        return 0, batch_size
    synthetic = int(round(batch_size * ratio))
    if ratio > 0:
        synthetic = max(synthetic, 1)
    synthetic = min(synthetic, batch_size - min_real)
    if ratio > 0 and synthetic < 1:
        raise ValueError(
            f"a per-process batch of {batch_size} cannot hold synthetic samples and keep "
            f"DATALOADER.MIN_REAL_PER_BATCH={min_real} real ones; raise SOLVER.IMS_PER_BATCH"
        )
    return batch_size - synthetic, synthetic


class MixedBatchSampler:
    """Infinite batches of (index, augmentation seed); indices < num_real are real, the rest synthetic."""

    def __init__(self, num_real: int, num_synthetic: int, batch_size: int, ratio: float = 0.5,
                 min_real: int = 1, seed: int = 0, rank: int = 0, world_size: int = 1, start_iter: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_real, self.num_synthetic = num_real, num_synthetic
        self.batch_size = batch_size
        self.real_per_batch, self.synthetic_per_batch = split_batch(
            batch_size, ratio, num_real, num_synthetic, min_real
        )
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.start_iter = start_iter

    @property
    def effective_ratio(self) -> float:
        return self.synthetic_per_batch / self.batch_size

    @lru_cache(maxsize=8)  # noqa: B019 - a handful of epochs per sampler; the sampler lives for the run
    def _permutation(self, kind: int, epoch: int) -> np.ndarray:
        n = self.num_real if kind == REAL else self.num_synthetic
        return np.random.default_rng([self.seed, kind, epoch]).permutation(n)

    def _stream(self, kind: int, it: int, count: int) -> list[int]:
        n = self.num_real if kind == REAL else self.num_synthetic
        first = (it * self.world_size + self.rank) * count
        out = []
        for p in range(first, first + count):
            out.append(int(self._permutation(kind, p // n)[p % n]))
        return out

    def batch(self, it: int) -> list[tuple[int, int]]:
        real = self._stream(REAL, it, self.real_per_batch) if self.real_per_batch else []
        syn = self._stream(SYNTHETIC, it, self.synthetic_per_batch) if self.synthetic_per_batch else []
        indices = real + [self.num_real + i for i in syn]
        seeds = np.random.SeedSequence([self.seed, 7, it, self.rank]).generate_state(len(indices))
        return [(i, int(s)) for i, s in zip(indices, seeds)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        it = self.start_iter
        while True:
            yield self.batch(it)
            it += 1
