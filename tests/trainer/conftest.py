"""Fixtures for the trainer tests: a tiny FC-CLIP of the real architecture, its random CLIP weights
written once per session and loaded through the production loader."""

import pytest
import torch

from dreammask.trainer.testing import build_tiny_model, tiny_cfg, write_tiny_clip_weights


@pytest.fixture(autouse=True)
def _torch_single_thread():
    """Tiny models run ~30x faster on one intra-op thread on a shared 2-core machine than on two
    threads fighting other processes; restored after each test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_clip")
    write_tiny_clip_weights(d / "dreammask-tiny-convnext.random.pt")
    return d


@pytest.fixture
def tiny_model_cfg(tiny_weights_dir):
    """The tiny_test.yaml preset pointing at the session's random CLIP checkpoint (mutable copy)."""
    return tiny_cfg(tiny_weights_dir)


@pytest.fixture
def tiny_model(tiny_model_cfg):
    """A fresh tiny FCCLIP (IAT on) with the tiny vocabulary set; seeded for reproducible tests."""
    torch.manual_seed(0)
    return build_tiny_model(tiny_model_cfg)
