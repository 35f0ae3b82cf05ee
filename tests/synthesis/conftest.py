"""Fixtures of the synthesis tests: one tiny GLIGEN checkpoint per session, saved to a temporary models
directory and loaded through the production loader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tiny_gligen, also imported by bench/synthesis.py

from tiny_gligen import TINY_IMAGE_SIZE, TINY_MODEL_SUBPATH, build_tiny_gligen  # noqa: E402


@pytest.fixture(scope="session")
def gligen_models_dir(tmp_path_factory) -> Path:
    models_dir = tmp_path_factory.mktemp("models")
    build_tiny_gligen(models_dir)
    return models_dir


@pytest.fixture(scope="session")
def gligen_settings(gligen_models_dir):
    from dreammask.services.synthesis.settings import SynthesisSettings
    from dreammask.shared.settings import Settings

    core = Settings(models_dir=gligen_models_dir, device="cpu", allow_hub_downloads=False)
    synthesis = SynthesisSettings.of(core).model_copy(update=dict(
        gligen_model_path=Path(TINY_MODEL_SUBPATH),  # relative: resolved under models_dir, as deployed
        gligen_batch_size=2,
        gligen_warmup_image_size=TINY_IMAGE_SIZE,
    ))
    return core, synthesis


@pytest.fixture(scope="session")
def gligen_renderer(gligen_settings):
    from dreammask.services.synthesis.backends.gligen import GligenRenderer

    _, synthesis = gligen_settings
    renderer = GligenRenderer.from_settings(synthesis)
    renderer.warmup()
    yield renderer
    renderer.close()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The test machine's cores are shared: OpenMP threads spin-waiting for a busy core made these
    tiny renders 20x slower than one thread. Restored after each module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
