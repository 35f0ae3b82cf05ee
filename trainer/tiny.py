"""A tiny FC-CLIP of the real architecture for CPU demos (`make demo`, `train_net --tiny`) and tests:
random open_clip weights for the bundled "dreammask-tiny-convnext" config are written to a file and loaded
through the production loader (`load_clip_backbone`), the same code path as a real checkpoint."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .config import CfgNode, load_config

TINY_CLIP_MODEL_NAME = "dreammask-tiny-convnext"
TINY_WEIGHTS_FILENAME = "dreammask-tiny-convnext.random.pt"
# A small vocabulary: three classes seen in training, one novel (as CNA would add), one stuff class.
TINY_VOCABULARY = {
    "class_names": ["person", "dog", "sky", "awning"],
    "seen": [True, True, True, False],
    "thing_flags": [True, True, False, True],
    "synonyms": {"person": ["people"], "awning": ["canopy"]},
}
_process_weights_dir: Path | None = None


def write_tiny_clip_weights(path: str | Path, seed: int = 0) -> Path:
    """Save a randomly initialised tiny open_clip model's state_dict (deterministic for a seed)."""
    from .modeling.backbone.clip_convnext import build_clip_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_clip_model(TINY_CLIP_MODEL_NAME, None)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent writers never share a temp file
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return path


def tiny_cfg(weights_dir: str | Path | None = None) -> CfgNode:
    """The tiny_test.yaml preset with CLIP weights in `weights_dir` (written there if missing; default: a
    temporary folder kept for the process)."""
    global _process_weights_dir
    if weights_dir is None:
        if _process_weights_dir is None:
            _process_weights_dir = Path(tempfile.mkdtemp(prefix="dreammask-tiny-clip-"))
        weights_dir = _process_weights_dir
    path = Path(weights_dir) / TINY_WEIGHTS_FILENAME
    if not path.is_file():
        write_tiny_clip_weights(path)
    cfg = load_config("tiny_test.yaml")
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
