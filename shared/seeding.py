"""Per-scene seeds derived from the job seed, so any scene re-renders identically, batched or not."""

from __future__ import annotations

import zlib

import numpy as np

# One salt per use, so the layout sampler and the renderer draw independent streams.
SALTS = {"layout": 1, "synthesis": 2, "annotation": 3, "association": 4}


def scene_seed(job_seed: int, scene_index: int, purpose: str = "synthesis") -> int:
    salt = SALTS.get(purpose) or zlib.crc32(purpose.encode())
    return int(np.random.SeedSequence([int(job_seed), int(scene_index), salt]).generate_state(1)[0] & 0x7FFFFFFF)


def rng(job_seed: int, scene_index: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng(scene_seed(job_seed, scene_index, purpose))
