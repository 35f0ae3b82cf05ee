"""The `gligen` RenderBackend: loaded from a models dir by `from_settings`, batched and reproducible,
provenance with every image, the 30-object rule, and bad layouts failing alone with their reason."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from tiny_gligen import TINY_IMAGE_SIZE

from dreammask.services.synthesis.backends.gligen import GligenRenderer, trim_objects
from dreammask.shared.backends import RenderOutput
from dreammask.shared.schemas import LayoutObject, SceneLayout, SynthesisParams
from dreammask.shared.seeding import scene_seed

PARAMS = SynthesisParams(steps=2, guidance_scale=7.5, gligen_scheduled_sampling_beta=1.0)


def layout(index: int, objects: list[tuple[str, list[float]]], novel: str | None = None, caption: str = "") -> SceneLayout:
    novel = novel or objects[0][0]
    return SceneLayout(
        job_id="job1", scene_id=f"s{index:05d}", scene_index=index, novel_category=novel,
        caption=caption or f"a photo of a {novel}",
        objects=[LayoutObject(category=c, box=b, is_novel=(c == novel)) for c, b in objects],
        seed=index, backend="test",
    )


SCENES = [
    layout(0, [("awning", [0.1, 0.1, 0.9, 0.3]), ("building", [0.0, 0.0, 1.0, 1.0])]),
    layout(1, [("stairway", [0.3, 0.3, 0.8, 0.9]), ("person", [0.1, 0.2, 0.3, 0.9])]),
    layout(2, [("teapot", [0.4, 0.4, 0.6, 0.6]), ("dining table", [0.0, 0.5, 1.0, 1.0]), ("cup", [0.7, 0.5, 0.8, 0.6])]),
]
SEEDS = [scene_seed(7, s.scene_index) for s in SCENES]


def pixels(out: RenderOutput) -> np.ndarray:
    return np.asarray(out.image, dtype=np.int16)


def test_loaded_from_the_models_dir_and_ready(gligen_renderer, gligen_models_dir):
    assert gligen_renderer.ready()
    d = gligen_renderer.describe()
    assert d["backend"] == "gligen"
    assert d["model_path"].startswith(str(gligen_models_dir.resolve()))
    assert d["revision"].startswith("sha256:")
    assert d["dtype"] == "float32" and d["device"] == "cpu"
    assert d["attention"] == "sdpa" and d["vae_slicing"] == "auto" and d["torch_compile"] is False


def test_images_and_provenance(gligen_renderer, gligen_models_dir):
    outs = gligen_renderer.render(SCENES, SEEDS, PARAMS, TINY_IMAGE_SIZE)
    assert len(outs) == 3 and all(isinstance(o, RenderOutput) for o in outs)
    for scene, out in zip(SCENES, outs, strict=True):
        assert out.image.mode == "RGB" and out.image.size == (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
        info = out.info
        assert info["scheduler"] == "PNDMScheduler" and info["requested_scheduler"] == "default"
        assert info["steps"] == 2 and info["guidance_scale"] == 7.5
        assert info["gligen_scheduled_sampling_beta"] == 1.0
        assert info["grounding_steps"] == info["denoising_iterations"] >= 2  # beta 1: grounded throughout
        assert info["negative_prompt"] == PARAMS.negative_prompt
        assert info["dtype"] == "float32"
        assert info["model_path"].startswith(str(gligen_models_dir.resolve()))
        assert info["model_revision"] == gligen_renderer.describe()["revision"]
        assert "seed" not in info and info["prompt"] == scene.caption  # the seed is the caller's record
        assert info["phrases"] == [o.category for o in scene.objects]
        assert info["batch_size"] in (1, 2)  # gligen_batch_size=2 cuts 3 scenes into 2 + 1
        assert out.dropped == [] and info["dropped_objects"] == 0
    assert pixels(outs[0]).std() > 1.0


def test_a_scene_renders_the_same_alone_or_batched(gligen_renderer):
    batched = gligen_renderer.render(SCENES, SEEDS, PARAMS, TINY_IMAGE_SIZE)
    for i in range(3):
        alone = gligen_renderer.render([SCENES[i]], [SEEDS[i]], PARAMS, TINY_IMAGE_SIZE)[0]
        # uint8 after rounding: float noise of ~1e-6 can flip a rounding, never more than one level.
        assert np.abs(pixels(alone) - pixels(batched[i])).max() <= 1
    again = gligen_renderer.render(SCENES[::-1], SEEDS[::-1], PARAMS, TINY_IMAGE_SIZE)
    assert np.abs(pixels(again[0]) - pixels(batched[2])).max() <= 1
    other = gligen_renderer.render([SCENES[0]], [SEEDS[0] + 1], PARAMS, TINY_IMAGE_SIZE)[0]
    assert np.abs(pixels(other) - pixels(batched[0])).max() > 10


def test_other_schedulers_and_guidance(gligen_renderer):
    for name, cls in [("ddim", "DDIMScheduler"), ("dpm", "DPMSolverMultistepScheduler"),
                      ("euler", "EulerDiscreteScheduler"), ("pndm", "PNDMScheduler")]:
        params = PARAMS.model_copy(update={"scheduler": name, "guidance_scale": 3.0})
        out = gligen_renderer.render(SCENES[:1], SEEDS[:1], params, TINY_IMAGE_SIZE)[0]
        assert isinstance(out, RenderOutput), name
        assert out.info["scheduler"] == cls and out.info["guidance_scale"] == 3.0


def crowded_layout(n: int = 33) -> SceneLayout:
    """n objects; the novel one is the smallest, so a size-only rule would drop it."""
    objects = [("kite", [0.45, 0.45, 0.47, 0.47])]
    for k in range(1, n):
        side = 0.05 + 0.025 * k  # strictly growing areas
        x0 = (k % 5) * 0.02
        objects.append((f"thing {k}", [x0, 0.0, min(1.0, x0 + side), min(1.0, side)]))
    return layout(9, objects, novel="kite")


def test_more_than_30_objects_keep_the_novel_one_and_the_largest(gligen_renderer):
    scene = crowded_layout(33)
    kept, dropped = trim_objects(scene, 30)
    assert len(kept) == 30 and len(dropped) == 3
    assert kept[0].category == "kite"
    # The smallest non-novel boxes go, in layout order.
    assert [o.category for o in dropped] == ["thing 1", "thing 2", "thing 3"]
    assert [o.category for o in kept][1:] == [f"thing {k}" for k in range(4, 33)]

    out = gligen_renderer.render([scene], [5], PARAMS, TINY_IMAGE_SIZE)[0]
    assert isinstance(out, RenderOutput)
    assert [o.category for o in out.dropped] == ["thing 1", "thing 2", "thing 3"]
    assert out.info["num_objects"] == 30 and out.info["dropped_objects"] == 3
    assert "kite" in out.info["phrases"]

    # The deployment may lower the limit further (never above GLIGEN's 30).
    assert len(trim_objects(scene, 5)[0]) == 5 and trim_objects(scene, 5)[0][0].category == "kite"


def test_the_schema_rejects_bad_boxes_and_layouts_without_objects():
    with pytest.raises(ValidationError, match="outside"):
        LayoutObject(category="cat", box=[0.1, 0.1, 1.2, 0.5])
    with pytest.raises(ValidationError, match="x1 > x0"):
        LayoutObject(category="cat", box=[0.5, 0.1, 0.4, 0.5])
    with pytest.raises(ValidationError, match="novel category"):
        SceneLayout(job_id="j", scene_id="s00000", scene_index=0, novel_category="kite", caption="",
                    objects=[], seed=0, backend="t")


def test_one_seed_per_layout_is_the_callers_contract(gligen_renderer):
    # Layouts, steps, guidance and size are validated at their boundary (schema on read, limits at
    # submission: tests/api/test_jobs_api.py); the renderer trusts them, and checks only how it is called.
    with pytest.raises(ValueError, match="one seed per layout"):
        gligen_renderer.render(SCENES[:2], SEEDS[:1], PARAMS, TINY_IMAGE_SIZE)


def test_lifecycle_load_warm_close(gligen_settings):
    _, synthesis = gligen_settings
    renderer = GligenRenderer.from_settings(synthesis)
    assert not renderer.ready()  # loaded, not yet warmed up
    renderer.warmup()  # a one-step render
    assert renderer.ready()
    renderer.close()
    assert not renderer.ready()
    with pytest.raises(RuntimeError, match="closed"):
        renderer.render(SCENES[:1], SEEDS[:1], PARAMS, TINY_IMAGE_SIZE)
