"""The tiny FC-CLIP of the real architecture (the `tiny_test` preset) for CPU demos, benches and tests:
its random CLIP weights are a file read through the production loader (`load_clip_backbone`), the same
code path as a real checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import CfgNode, get_training_cfg
from .modeling.backbone.clip_convnext import write_random_clip_weights

TINY_CLIP_MODEL_NAME = "dreammask-tiny-convnext"
TINY_WEIGHTS_FILENAME = "dreammask-tiny-convnext.random.pt"
# A small vocabulary: three classes seen in training, one novel (as CNA would add), one stuff class.
TINY_VOCABULARY = {
    "class_names": ["person", "dog", "sky", "awning"],
    "seen": [True, True, True, False],
    "thing_flags": [True, True, False, True],
    "synonyms": {"person": ["people"], "awning": ["canopy"]},
}


def write_tiny_clip_weights(path: str | Path, seed: int = 0) -> Path:
    """Save a randomly initialised tiny open_clip model's state_dict (deterministic for a seed)."""
    return write_random_clip_weights(TINY_CLIP_MODEL_NAME, path, seed)


def tiny_cfg(weights_dir: str | Path | None = None, overrides=None) -> CfgNode:
    """The tiny_test preset (every key), its CLIP weights a file in `weights_dir` (written there if missing)
    when given, else the preset's own "random:0" file."""
    cfg = get_training_cfg(tiny=True, overrides=overrides)
    if weights_dir is not None:
        path = Path(weights_dir) / TINY_WEIGHTS_FILENAME
        if not path.is_file():
            write_tiny_clip_weights(path)
        cfg.MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS = str(path.resolve())
    return cfg


def build_tiny_model(cfg: CfgNode | None = None, vocabulary: dict | None = None, seed: int = 0):
    """build_model(tiny_cfg()) with TINY_VOCABULARY (or `vocabulary`, the set_vocabulary kwargs) set."""
    from .modeling import build_model

    cfg = cfg if cfg is not None else tiny_cfg()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
    model.set_vocabulary(**(vocabulary or TINY_VOCABULARY))
    return model
