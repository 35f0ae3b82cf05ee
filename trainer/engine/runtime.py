"""Where a run computes and how it is seeded: shared by training and evaluation (which imports nothing else
from the training loop)."""

from __future__ import annotations

import logging

import torch

from .. import distributed as dist

log = logging.getLogger("dreammask.trainer")


def resolve_device(cfg) -> torch.device:
    want = str(cfg.MODEL.DEVICE or "auto")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("MODEL.DEVICE is 'cuda' but this machine has no GPU; set MODEL.DEVICE cpu")
        if dist.is_dist():
            return torch.device("cuda", dist.get_local_rank())
    return torch.device(want)


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed torch, numpy and random (seed < 0: draw one, as detectron2 does); returns the seed used."""
    import random

    import numpy as np

    if seed < 0:
        seed = int.from_bytes(__import__("os").urandom(3), "little")
        log.info("SEED < 0: using seed %d", seed)
    torch.manual_seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    random.seed(seed + rank)
    return seed
