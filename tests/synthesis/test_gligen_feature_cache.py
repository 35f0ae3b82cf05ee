"""Deep-feature caching (`feature_cache.DeepFeatureCache`), on the tiny real-architecture GLIGEN checkpoint:
a shallow pass on the feature its own step kept is the full pass; a loop with caching runs the whole UNet
only on the steps it should, skips real work in between, keeps each scene's image independent of its batch,
and changes the images; the setting reaches the loop and is refused beside torch.compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from tiny_gligen import TINY_IMAGE_SIZE

from dreammask.services.synthesis.feature_cache import DeepFeatureCache
from dreammask.services.synthesis.gligen_loop import GligenBatchPipeline, GroundedPrompt
from dreammask.services.synthesis.model_loading import load_pipeline, plan_load
from dreammask.services.synthesis.settings import SynthesisSettings

SAMPLES = [
    GroundedPrompt("a cat on a sofa", ["cat", "sofa"], [[0.1, 0.2, 0.5, 0.6], [0.0, 0.5, 1.0, 1.0]], seed=11),
    GroundedPrompt("a stairway in a hall", ["stairway"], [[0.4, 0.3, 0.9, 0.95]], seed=33),
]
STEPS = 7
KW = dict(height=TINY_IMAGE_SIZE, width=TINY_IMAGE_SIZE, num_inference_steps=STEPS, guidance_scale=7.5,
          gligen_scheduled_sampling_beta=0.3)


@pytest.fixture(scope="module")
def loop(gligen_settings):
    core, synthesis = gligen_settings
    return GligenBatchPipeline.from_pipe(load_pipeline(plan_load(synthesis, core.models_dir, device="cpu")))


def unet_inputs(loop):
    """One guided step's UNet arguments for SAMPLES, as the loop builds them."""
    torch.manual_seed(0)
    embeds, _ = loop.encode_prompts([s.prompt for s in SAMPLES])
    grounding = loop.grounding_inputs(SAMPLES)
    side = TINY_IMAGE_SIZE // loop.vae_scale_factor
    sample = torch.randn(len(SAMPLES), loop.unet.config.in_channels, side, side)
    return (sample, torch.tensor(500)), dict(encoder_hidden_states=embeds, cross_attention_kwargs={"gligen": grounding})


@pytest.mark.parametrize("fusers", [True, False])
def test_a_shallow_pass_on_its_own_steps_feature_is_the_full_pass(loop, fusers):
    args, kwargs = unet_inputs(loop)
    cache = DeepFeatureCache(loop.unet, interval=2)
    loop.enable_fuser(fusers)
    try:
        with torch.no_grad():
            full = cache.full(*args, **kwargs).sample
            shallow = cache.shallow(*args, **kwargs).sample
            plain = loop.unet(*args, **kwargs).sample  # the stand-ins are gone again
    finally:
        loop.enable_fuser(True)
    torch.testing.assert_close(shallow, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(plain, full, rtol=0, atol=0)
    assert (cache.full_steps, cache.shallow_steps) == (1, 1)
    assert all("forward" not in m.__dict__ for m in loop.unet.modules())


def test_a_shallow_pass_skips_the_deep_blocks(loop):
    from torch.utils.flop_counter import FlopCounterMode

    args, kwargs = unet_inputs(loop)
    cache = DeepFeatureCache(loop.unet, interval=2)
    ran = []
    hooks = [m.register_forward_pre_hook(lambda m, _a: ran.append(m)) for m in loop.unet.modules()
             if type(m).__name__ in ("ResnetBlock2D", "Transformer2DModel")]
    try:
        with torch.no_grad():
            with FlopCounterMode(display=False) as fc:
                cache.full(*args, **kwargs)
            full_flops, full_ran = fc.get_total_flops(), len(ran)
            ran.clear()
            with FlopCounterMode(display=False) as fc:
                cache.shallow(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    # The tiny UNet: the first down block's resnet and the last up block's two resnets run; the deep
    # blocks' resnets and every transformer (they sit in the deep blocks) do not.
    shallow_resnets = len(loop.unet.down_blocks[0].resnets) + len(loop.unet.up_blocks[-1].resnets)
    assert len(ran) == shallow_resnets < full_ran
    assert fc.get_total_flops() < 0.7 * full_flops


def test_caching_runs_the_whole_unet_on_its_steps_only(loop):
    loop.feature_cache_interval = 3
    try:
        cached = loop(SAMPLES, **KW)
        alone = loop(SAMPLES[1:], **KW)
    finally:
        loop.feature_cache_interval = 1
    exact = loop(SAMPLES, **KW)
    # PNDM runs 8 iterations for 7 steps; beta 0.3: grounding for 2. Full passes at 0, 3, 6 and at 2 (the
    # fusers went off).
    assert cached.info["denoising_iterations"] == 8 and cached.info["grounding_steps"] == 2
    assert cached.info["full_unet_passes"] == 4 and cached.info["feature_cache_interval"] == 3
    assert exact.info["full_unet_passes"] == 8 and exact.info["feature_cache_interval"] == 1
    assert np.isfinite(cached.images).all() and cached.images.shape == exact.images.shape
    assert np.abs(cached.images - exact.images).max() > 1e-3  # it is an approximation, not the same path
    # Every operation is per sample: a scene renders the same alone as in a batch.
    np.testing.assert_allclose(alone.images[0], cached.images[1], atol=1e-5)


def test_interval_one_is_the_exact_loop(loop):
    loop.feature_cache_interval = 1
    a, b = loop(SAMPLES, **KW), loop(SAMPLES, **KW)
    assert a.info["full_unet_passes"] == a.info["denoising_iterations"]
    np.testing.assert_array_equal(a.images, b.images)


def test_the_setting_reaches_the_loop_and_the_record(gligen_settings):
    from dreammask.services.synthesis.backends.gligen import GligenRenderer
    from dreammask.shared.schemas import LayoutObject, SceneLayout, SynthesisParams

    _, synthesis = gligen_settings
    renderer = GligenRenderer.from_settings(synthesis.model_copy(update={"gligen_feature_cache_interval": 2}))
    try:
        renderer.warmup()
        assert renderer.describe()["feature_cache_interval"] == 2
        layout = SceneLayout(job_id="j", scene_id="s00000", scene_index=0, novel_category="cat",
                             caption="a photo of a cat", seed=0, backend="test",
                             objects=[LayoutObject(category="cat", box=[0.1, 0.1, 0.6, 0.7], is_novel=True)])
        [out] = renderer.render([layout], [5], SynthesisParams(steps=4, guidance_scale=7.5), TINY_IMAGE_SIZE)
        assert out.info["feature_cache_interval"] == 2
        # PNDM: 5 iterations for 4 steps; beta 0.3: grounding for 1. Full passes at 0, 2, 4 and at 1.
        assert (out.info["denoising_iterations"], out.info["grounding_steps"]) == (5, 1)
        assert out.info["full_unet_passes"] == 4
    finally:
        renderer.close()


def test_the_setting_is_checked(monkeypatch):
    monkeypatch.setenv("DREAMMASK_GLIGEN_FEATURE_CACHE_INTERVAL", "3")
    assert SynthesisSettings().gligen_feature_cache_interval == 3
    monkeypatch.setenv("DREAMMASK_GLIGEN_FEATURE_CACHE_INTERVAL", "0")
    with pytest.raises(ValidationError, match="gligen_feature_cache_interval"):
        SynthesisSettings()
    monkeypatch.setenv("DREAMMASK_GLIGEN_FEATURE_CACHE_INTERVAL", "2")
    monkeypatch.setenv("DREAMMASK_GLIGEN_TORCH_COMPILE", "true")
    with pytest.raises(ValidationError, match="DREAMMASK_GLIGEN_TORCH_COMPILE=false"):
        SynthesisSettings()


def test_a_unet_it_does_not_understand_is_refused(loop):
    with pytest.raises(ValueError, match="at least 1"):
        DeepFeatureCache(loop.unet, interval=0)

    class OneLevel:
        down_blocks, up_blocks = [object()], [object()]

    with pytest.raises(ValueError, match="two down and two up blocks"):
        DeepFeatureCache(OneLevel(), interval=2)
