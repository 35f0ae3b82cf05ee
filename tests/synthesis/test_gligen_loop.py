"""The batched GLIGEN loop against diffusers' own StableDiffusionGLIGENPipeline, on a tiny real-architecture
checkpoint loaded from disk through the production loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_gligen import CLIP_VOCAB_SIZE, TINY_IMAGE_SIZE, TINY_MODEL_SUBPATH

from dreammask.services.synthesis.gligen_loop import GligenBatchPipeline, GroundedPrompt, make_scheduler
from dreammask.services.synthesis.model_loading import load_pipeline, plan_load

CAT = GroundedPrompt("a cat on a sofa", ["cat", "sofa"], [[0.1, 0.2, 0.5, 0.6], [0.0, 0.5, 1.0, 1.0]], seed=11)
AWNING = GroundedPrompt(
    "an awning over a shop front",
    ["awning", "building", "tv monitor"],
    [[0.2, 0.1, 0.8, 0.3], [0.0, 0.0, 1.0, 1.0], [0.3, 0.4, 0.5, 0.9]],
    seed=22,
)
STAIRS = GroundedPrompt("a stairway in a hall", ["stairway"], [[0.4, 0.3, 0.9, 0.95]], seed=33)

KW = dict(height=TINY_IMAGE_SIZE, width=TINY_IMAGE_SIZE, num_inference_steps=2, guidance_scale=7.5,
          gligen_scheduled_sampling_beta=1.0, negative_prompt="blurry")
# Same sample alone or in a batch: equal up to float reassociation in batched matmuls.
BATCH_TOL = 1e-4


@pytest.fixture(scope="module")
def pipe(gligen_settings):
    core, synthesis = gligen_settings
    return load_pipeline(plan_load(synthesis, core.models_dir, device="cpu"))


@pytest.fixture(scope="module")
def loop(pipe):
    return GligenBatchPipeline.from_pipe(pipe)


def test_tokenizer_is_the_real_clip_bpe(pipe):
    tok = pipe.tokenizer
    assert len(tok) == CLIP_VOCAB_SIZE == 49408
    assert tok.model_max_length == 77
    # Ids of OpenAI CLIP's tokenizer for this text: <|startoftext|> a photo of a cat <|endoftext|>
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_loader_reads_the_saved_checkpoint(pipe, gligen_models_dir):
    assert pipe.unet.config.attention_type == "gated"
    assert hasattr(pipe.unet, "position_net")
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    assert pipe.text_encoder.config.vocab_size == CLIP_VOCAB_SIZE
    saved = gligen_models_dir / TINY_MODEL_SUBPATH / "unet" / "config.json"
    assert saved.is_file()


@pytest.mark.parametrize("scheduler", ["default", "euler"])
def test_one_sample_matches_the_diffusers_pipeline(pipe, loop, scheduler):
    ours = loop([CAT], scheduler=scheduler, **KW).images[0]
    pipe.scheduler = make_scheduler(loop.scheduler, scheduler)
    ref = pipe(
        prompt=CAT.prompt, gligen_phrases=CAT.phrases, gligen_boxes=CAT.boxes,
        generator=torch.Generator("cpu").manual_seed(CAT.seed), output_type="np",
        num_inference_steps=KW["num_inference_steps"], guidance_scale=KW["guidance_scale"],
        gligen_scheduled_sampling_beta=KW["gligen_scheduled_sampling_beta"],
        negative_prompt=KW["negative_prompt"], height=KW["height"], width=KW["width"],
    ).images[0]
    pipe.scheduler = loop.scheduler
    assert ours.shape == ref.shape == (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_batched_equals_unbatched_for_the_same_seeds(loop):
    batched = loop([CAT, AWNING, STAIRS], **KW).images
    reordered = loop([STAIRS, CAT], **KW).images
    for sample, image in zip([CAT, AWNING, STAIRS], batched, strict=True):
        alone = loop([sample], **KW).images[0]
        np.testing.assert_allclose(image, alone, atol=BATCH_TOL)
    np.testing.assert_allclose(reordered[0], batched[2], atol=BATCH_TOL)
    np.testing.assert_allclose(reordered[1], batched[0], atol=BATCH_TOL)
    # Different scenes in one batch really are different images.
    assert np.abs(batched[0] - batched[1]).max() > 0.1


def test_each_sample_is_grounded_on_its_own_boxes_and_phrases(loop):
    """Were the batch sharing one layout (as the diffusers pipeline does), CAT's image would change with
    its neighbour; it does not, while moving its own boxes or renaming its phrases does change it."""
    moved = GroundedPrompt(CAT.prompt, CAT.phrases, [[0.6, 0.6, 0.9, 0.9], [0.0, 0.0, 0.4, 0.4]], CAT.seed)
    renamed = GroundedPrompt(CAT.prompt, ["dog", "table"], CAT.boxes, CAT.seed)
    base, next_to_awning, next_to_moved = (
        loop([CAT], **KW).images[0],
        loop([AWNING, CAT], **KW).images[1],
        loop([moved, CAT], **KW).images[1],
    )
    np.testing.assert_allclose(next_to_awning, base, atol=BATCH_TOL)
    np.testing.assert_allclose(next_to_moved, base, atol=BATCH_TOL)
    assert np.abs(loop([moved], **KW).images[0] - base).max() > 100 * BATCH_TOL
    assert np.abs(loop([renamed], **KW).images[0] - base).max() > 100 * BATCH_TOL


def test_scheduled_sampling_beta_turns_grounding_off(loop):
    """beta = 0 keeps the fusers off for every step: the boxes then do not matter at all."""
    moved = GroundedPrompt(CAT.prompt, CAT.phrases, [[0.6, 0.6, 0.9, 0.9], [0.0, 0.0, 0.4, 0.4]], CAT.seed)
    off = {**KW, "gligen_scheduled_sampling_beta": 0.0}
    out = loop([CAT, moved], **off)
    assert out.info["grounding_steps"] == 0
    np.testing.assert_array_equal(out.images[0], out.images[1])
    half = loop([CAT], **{**KW, "num_inference_steps": 4, "gligen_scheduled_sampling_beta": 0.5})
    assert half.info["grounding_steps"] == 2
    # The switch is restored after a call, so the next call with beta = 1 grounds again.
    assert all(m.enabled for m in loop._fusers)


def test_seed_changes_the_image_and_no_guidance_runs_one_branch(loop):
    other_seed = GroundedPrompt(CAT.prompt, CAT.phrases, CAT.boxes, seed=12)
    a, b = loop([CAT, other_seed], **KW).images
    assert np.abs(a - b).max() > 0.1
    plain = loop([CAT], **{**KW, "guidance_scale": 1.0}).images[0]
    assert plain.shape == a.shape and np.abs(plain - a).max() > 1e-3


def test_bad_samples_get_clear_errors(loop):
    with pytest.raises(ValueError, match="one phrase per box"):
        GroundedPrompt("x", ["a"], [[0, 0, 1, 1], [0, 0, 0.5, 0.5]], 0)
    with pytest.raises(ValueError, match="at most 30"):
        GroundedPrompt("x", ["a"] * 31, [[0, 0, 1, 1]] * 31, 0)
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler(loop.scheduler, "lms")
