"""Per-scene seeds derived from the job seed, so any scene re-renders identically, batched or not."""

from __future__ import annotations

import zlib

import numpy as np

from .chain import DEFAULT_CHAIN

# One salt per stage that draws random numbers (`StageDef.seed_salt`), so the layout sampler and the
# renderer draw independent streams; other uses salt with their name's CRC.
SALTS = {st.name: st.seed_salt for st in DEFAULT_CHAIN if st.seed_salt is not None}


def scene_seed(job_seed: int, scene_index: int, purpose: str = "synthesis") -> int:
    salt = SALTS.get(purpose) or zlib.crc32(purpose.encode())
    return int(np.random.SeedSequence([int(job_seed), int(scene_index), salt]).generate_state(1)[0] & 0x7FFFFFFF)


def rng(job_seed: int, scene_index: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng(scene_seed(job_seed, scene_index, purpose))
