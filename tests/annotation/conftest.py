"""Tiny randomly initialised SAM and open_clip models, written to a models directory the way an operator
mounts real checkpoints, and the environment that points the annotation settings at them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreammask.services.annotation.backends.clip import TINY_MODEL_NAME, save_tiny_clip
from dreammask.services.annotation.backends.sam import save_tiny_sam


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("models")
    save_tiny_sam(models / "sam")
    save_tiny_clip(models / "clip")
    return models


@pytest.fixture(scope="session")
def tiny_annotation_env(tiny_models_dir) -> dict[str, str]:
    """DREAMMASK_* variables that select the tiny models (paths relative to the models directory)."""
    return {
        "DREAMMASK_MODELS_DIR": str(tiny_models_dir),
        "DREAMMASK_SAM_CHECKPOINT": "sam/sam_tiny.pth",
        "DREAMMASK_SAM_MODEL_TYPE": "vit_b",  # overridden by the architecture JSON beside the checkpoint
        "DREAMMASK_CLIP_MODEL": TINY_MODEL_NAME,
        "DREAMMASK_CLIP_PRETRAINED": f"clip/{TINY_MODEL_NAME}.bin",
        "DREAMMASK_CLIP_MODEL_CONFIG": f"clip/{TINY_MODEL_NAME}.json",
        "DREAMMASK_ANNOTATION_DEVICE": "cpu",
        "DREAMMASK_MASK_MIN_REGION_AREA": "16",
        "DREAMMASK_MASK_MIN_HOLE_AREA": "16",
    }


@pytest.fixture
def annotation_env(tiny_annotation_env, monkeypatch):
    for k, v in tiny_annotation_env.items():
        monkeypatch.setenv(k, v)
    return tiny_annotation_env
