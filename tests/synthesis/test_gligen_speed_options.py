"""Speed options that must not change the images (beyond float rounding): channels-last layout and fused
QKV projections, on the tiny real-architecture GLIGEN checkpoint; and the caption length taken from the
text encoder, so a tokenizer without a usable `model_max_length` works (transformers 5.x overflowed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_gligen import TINY_IMAGE_SIZE, build_clip_tokenizer

from dreammask.services.synthesis.gligen_loop import GligenBatchPipeline, GroundedPrompt
from dreammask.services.synthesis.model_loading import apply_memory_options, load_pipeline, plan_load

SAMPLES = [
    GroundedPrompt("a cat on a sofa", ["cat", "sofa"], [[0.1, 0.2, 0.5, 0.6], [0.0, 0.5, 1.0, 1.0]], seed=11),
    GroundedPrompt("a stairway in a hall", ["stairway"], [[0.4, 0.3, 0.9, 0.95]], seed=33),
]
KW = dict(height=TINY_IMAGE_SIZE, width=TINY_IMAGE_SIZE, num_inference_steps=2, guidance_scale=7.5,
          gligen_scheduled_sampling_beta=0.5)
# The tolerance docs/synthesis.md states for layout and fusion options (float images in [0, 1], fp32):
# the same arithmetic in another order.
OPTION_TOL = 1e-4


@pytest.fixture()
def pipe(gligen_settings):
    """A fresh pipeline per test: the options change modules in place."""
    core, synthesis = gligen_settings
    return load_pipeline(plan_load(synthesis, core.models_dir, device="cpu"))


def render(pipe, settings, **update):
    options = apply_memory_options(pipe, settings.model_copy(update=update))
    return GligenBatchPipeline.from_pipe(pipe)(SAMPLES, **KW).images, options


def test_channels_last_and_fused_qkv_give_the_same_images(pipe, gligen_settings):
    _, synthesis = gligen_settings
    plain, options = render(pipe, synthesis)
    assert options["channels_last"] is False and options["fused_qkv"] is False  # "auto": off (CL everywhere, QKV on CPU)

    fused, options = render(pipe, synthesis, gligen_fuse_qkv="on")
    assert options["fused_qkv"] is True
    attn = [m for m in pipe.unet.modules() if type(m).__name__ == "Attention"]
    assert attn and all(m.fused_projections for m in attn)
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    # The gated fusers' self-attention and the cross-attention both run fused.
    assert any(hasattr(m, "to_qkv") for m in attn) and any(hasattr(m, "to_kv") for m in attn)
    np.testing.assert_allclose(fused, plain, atol=OPTION_TOL)

    both, options = render(pipe, synthesis, gligen_fuse_qkv="on", gligen_channels_last="on")
    assert options["channels_last"] is True
    conv = pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    np.testing.assert_allclose(both, plain, atol=OPTION_TOL)

    # Back to the plain layout and processors: the same images as first (options are re-applicable).
    again, options = render(pipe, synthesis, gligen_fuse_qkv="off", gligen_channels_last="off")
    assert pipe.unet.conv_in.weight.is_contiguous()
    np.testing.assert_allclose(again, plain, atol=1e-6)


def test_fused_qkv_needs_sdpa(pipe, gligen_settings):
    _, synthesis = gligen_settings
    with pytest.raises(ValueError, match="DREAMMASK_GLIGEN_ATTENTION=sdpa"):
        apply_memory_options(pipe, synthesis.model_copy(update={"gligen_fuse_qkv": "on",
                                                                "gligen_attention": "default"}))


class NoMaxLength:
    """A tokenizer that declares no length at all."""

    def __init__(self, tok):
        self._tok = tok

    def __call__(self, *a, **k):
        return self._tok(*a, **k)


def test_prompt_length_comes_from_the_text_encoder(pipe, tmp_path):
    loop = GligenBatchPipeline.from_pipe(pipe)
    reference, _ = loop.encode_prompts(["a photo of a kite over a beach"])
    assert loop.prompt_length == pipe.text_encoder.config.max_position_embeddings == 77

    files_only = build_clip_tokenizer(tmp_path)  # no model_max_length given: transformers' 1e30 placeholder
    assert files_only.model_max_length > 10**20
    with pytest.raises(OverflowError):  # what the loop used to do with it
        files_only(["a cat"], padding="max_length", max_length=files_only.model_max_length, truncation=True)
    for tok in (files_only, NoMaxLength(files_only)):
        loop = GligenBatchPipeline(pipe.vae, pipe.text_encoder, tok, pipe.unet, pipe.scheduler)
        assert loop.prompt_length == 77
        embeds, truncated = loop.encode_prompts(["a photo of a kite over a beach", "kite " * 100])
        assert embeds.shape[:2] == (2, 77) and truncated == [False, True]
        torch.testing.assert_close(embeds[:1], reference)
        phrases = loop.encode_phrases(["kite", "beach"])
        assert set(phrases) == {"kite", "beach"}
        images = loop(SAMPLES[:1], **KW).images
        assert images.shape == (1, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3)
