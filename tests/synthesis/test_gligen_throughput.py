"""Throughput behaviours of the synthesis stage on the tiny GLIGEN model (CPU): batches cut into a fixed
set of sizes, constant embeddings cached, writes overlapped with the next GPU batch yet landed before the
task returns (and nothing counted done when the renderer dies mid-task), out-of-memory recovery that frees
the failed attempt before retrying, VAE slicing only after a whole-batch decode ran out of memory, and a
compiled UNet that never recompiles after the warm-up."""

from __future__ import annotations

import threading
import weakref

import numpy as np
import pytest
import torch
from tiny_gligen import TINY_IMAGE_SIZE

from dreammask.services.synthesis.backends.gligen import GligenRenderer
from dreammask.services.synthesis.model_loading import batch_size_set, split_batches
from dreammask.shared.backends import RenderOutput
from dreammask.shared.plan import write_plan
from dreammask.shared.schemas import CategorySet, LayoutObject, NovelCategory, SceneLayout, SynthesisParams

PARAMS = SynthesisParams(steps=2, guidance_scale=7.5, gligen_scheduled_sampling_beta=0.5)
NAMES = ["awning", "stairway", "teapot", "kite", "bench", "cup"]


def scenes(n: int, job_id: str = "job1") -> list[SceneLayout]:
    out = []
    for i in range(n):
        a, b = NAMES[i % len(NAMES)], NAMES[(i + 1) % len(NAMES)]
        out.append(SceneLayout(
            job_id=job_id, scene_id=f"s{i:05d}", scene_index=i, novel_category=a, caption=f"a photo of a {a}",
            objects=[LayoutObject(category=a, box=[0.1, 0.1, 0.5, 0.6], is_novel=True),
                     LayoutObject(category=b, box=[0.4, 0.3, 0.9, 0.9])],
            seed=i, backend="test"))
    return out


def pixels(out) -> np.ndarray:
    return np.asarray(out.image, dtype=np.int16)


def renderer_like(gligen_renderer, **update) -> GligenRenderer:
    """A renderer on the session's loaded weights with other settings (fresh loop state and caches)."""
    return GligenRenderer(gligen_renderer.pipeline, gligen_renderer.settings.model_copy(update=update))


def test_batches_are_cut_into_the_warmed_sizes():
    assert batch_size_set(8) == [1, 2, 4, 8] and batch_size_set(6) == [1, 2, 4, 6]
    assert split_batches(13, 8) == [8, 4, 1] and split_batches(16, 8) == [8, 8] and split_batches(0, 8) == []
    for b in (1, 3, 6, 8, 16):
        for n in range(0, 40):
            sizes = split_batches(n, b)
            assert sum(sizes) == n and set(sizes) <= set(batch_size_set(b)), (n, b, sizes)


def test_negative_prompt_and_phrases_are_encoded_once(gligen_renderer):
    r = renderer_like(gligen_renderer, gligen_batch_size=2)
    params = PARAMS.model_copy(update={"negative_prompt": "blurry"})
    layouts = scenes(4)
    first = r.render(layouts, list(range(4)), params, TINY_IMAGE_SIZE)
    calls = r._loop.text_encoder_calls
    again = r.render(layouts, list(range(4)), params, TINY_IMAGE_SIZE)
    # The second pass encodes only the captions, one call per GPU batch: no negative prompt, no phrases.
    assert r._loop.text_encoder_calls - calls == 2
    for a, b in zip(first, again, strict=True):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1
    # The cache holds what an uncached encode gives.
    fresh = renderer_like(gligen_renderer)
    loop = fresh._loop
    cached = r._loop.negative_embedding("blurry")
    direct, _ = loop.encode_prompts(["blurry"])
    assert torch.allclose(cached, direct, atol=1e-6)


class OOMAt:
    """Stands in for the UNet: raises torch.cuda.OutOfMemoryError on inputs of more than `max_batch`
    rows, and records whether the failed attempt's input was freed before the next call."""

    def __init__(self, unet, max_batch: int):
        self._unet, self.max_batch = unet, max_batch
        self.failed: list[weakref.ref] = []
        self.alive_at_retry: list[bool] = []

    def __getattr__(self, name):
        return getattr(self._unet, name)

    def __call__(self, sample, *args, **kwargs):
        if self.failed and len(self.alive_at_retry) < len(self.failed):
            self.alive_at_retry.append(self.failed[-1]() is not None)
        if sample.shape[0] > self.max_batch:
            self.failed.append(weakref.ref(sample))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return self._unet(sample, *args, **kwargs)


def test_out_of_memory_halves_the_batch_after_freeing_the_failed_attempt(gligen_renderer, monkeypatch):
    layouts, seeds = scenes(4), [11, 12, 13, 14]
    reference = renderer_like(gligen_renderer, gligen_batch_size=2).render(layouts, seeds, PARAMS, TINY_IMAGE_SIZE)
    r = renderer_like(gligen_renderer, gligen_batch_size=4)
    # Guidance doubles the UNet batch: 4 scenes are 8 rows, 2 scenes are 4.
    fake = OOMAt(r._loop.unet, max_batch=4)
    monkeypatch.setattr(r._loop, "unet", fake)
    outs = r.render(layouts, seeds, PARAMS, TINY_IMAGE_SIZE)
    assert len(fake.failed) == 1 and r.oom_splits == 1
    assert fake.alive_at_retry == [False], "the failed attempt's tensors were still alive during the retry"
    for a, b in zip(outs, reference, strict=True):
        assert isinstance(a, RenderOutput) and a.info["batch_size"] == 2
        assert np.abs(pixels(a) - pixels(b)).max() <= 1

    # Splitting off: the error reaches the caller (the task retries), nothing is swallowed.
    strict = renderer_like(gligen_renderer, gligen_batch_size=4, gligen_split_on_oom=False)
    monkeypatch.setattr(strict._loop, "unet", OOMAt(strict._loop.unet, max_batch=4))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        strict.render(layouts, seeds, PARAMS, TINY_IMAGE_SIZE)


def test_vae_slices_only_after_a_whole_batch_decode_ran_out_of_memory(gligen_renderer, monkeypatch):
    r = renderer_like(gligen_renderer, gligen_batch_size=2)
    layouts, seeds = scenes(2), [3, 4]
    whole = r.render(layouts, seeds, PARAMS, TINY_IMAGE_SIZE)
    assert r._loop.vae_slicing == "auto"
    vae, decode = r._loop.vae, r._loop.vae.decode
    sizes = []

    def decode_or_oom(latents, *a, **kw):
        sizes.append(len(latents))
        if len(latents) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return decode(latents, *a, **kw)

    monkeypatch.setattr(vae, "decode", decode_or_oom)
    sliced = r.render(layouts, seeds, PARAMS, TINY_IMAGE_SIZE)
    assert sizes == [2, 1, 1] and r._loop.vae_slicing == "on"
    r.render(layouts, seeds, PARAMS, TINY_IMAGE_SIZE)
    assert sizes[3:] == [1, 1]  # sticky: no second whole-batch attempt
    for a, b in zip(whole, sliced, strict=True):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1


# ---------------------------------------------------------------------------- the stage's writer pool

@pytest.fixture()
def stage_env(tmp_path, redis_url, redis_client, gligen_renderer, monkeypatch):
    """A real Runtime (local object store, Redis) whose `gligen` backend is the session's renderer."""
    from dreammask.shared import keys, registry
    from dreammask.shared.runtime import InProcessDispatcher, build_runtime
    from dreammask.shared.schemas import JobSpec
    from dreammask.shared.settings import Settings

    settings = Settings(storage_backend="local", storage_root=tmp_path / "objects", redis_url=redis_url,
                        models_dir=tmp_path / "models", device="cpu", cache_dir=tmp_path / "cache",
                        annotation_batch_size=8)
    rt = build_runtime(settings, dispatcher=InProcessDispatcher())
    renderer = renderer_like(gligen_renderer, gligen_batch_size=2)
    renderer._warm = True
    monkeypatch.setitem(registry._instances, ("synthesis", "gligen"), renderer)
    spec = JobSpec(train_categories=["person", "car"], num_novel=1, images_per_category=4,
                   image_size=TINY_IMAGE_SIZE, seed=3, backends={"synthesis": "gligen"},
                   synthesis=PARAMS.model_dump())
    stored = rt.tracker.create(spec, tenant="test", train_categories=["person", "car"])
    job_id = stored.job_id
    write_plan(rt.store, stored, CategorySet(job_id=job_id, backend="test", train=["person", "car"],
                                             novel=[NovelCategory(name="kite", nearest_train="person", score=0.5)]))
    layouts = scenes(4, job_id)
    for lay in layouts:
        rt.store.put_json(keys.layout(job_id, lay.scene_id), lay)
    return rt, renderer, job_id, [lay.scene_id for lay in layouts]


class GatedStore:
    """The runtime's store, with image writes of the first batch held until the renderer has started
    the next batch: if writes sat on the renderer's critical path this would never happen."""

    def __init__(self, store, first_batch: set[str], next_batch_started: threading.Event):
        self._store, self.first_batch, self.started = store, first_batch, next_batch_started
        self.overlapped: list[bool] = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def put_bytes(self, key, data, content_type=None):
        if any(f"/{sid}." in key for sid in self.first_batch):
            self.overlapped.append(self.started.wait(60))
        return self._store.put_bytes(key, data, content_type)


def test_writes_overlap_the_next_batch_and_land_before_the_task_returns(stage_env, monkeypatch):
    from dreammask.shared import keys
    from dreammask.shared.chain import DEFAULT_CHAIN
    from dreammask.shared.skeleton import run_stage

    rt, renderer, job_id, sids = stage_env
    started = threading.Event()
    chunk = renderer._render_chunk
    calls = []

    def render_chunk(c, params, size):
        calls.append(len(c))
        if len(calls) == 2:
            started.set()
        return chunk(c, params, size)

    monkeypatch.setattr(renderer, "_render_chunk", render_chunk)
    gated = GatedStore(rt.store, set(sids[:2]), started)
    monkeypatch.setattr(rt, "store", gated)
    out = run_stage(rt, "synthesis", job_id, sids)
    assert (out["done"], out["forwarded"]) == (4, 4) and calls == [2, 2]
    assert gated.overlapped == [True, True]
    # Returned (the task would be acked now): every image and record is there, every scene counted.
    for sid in sids:
        assert rt.store.exists(keys.image(job_id, sid)) and rt.store.exists(keys.render_record(job_id, sid))
    assert sorted(x.decode() for x in rt.redis.smembers(rt.tracker._k(job_id, "done", "synthesis"))) == sids
    assert [(t, a[1]) for t, a in rt.dispatcher.pending] == [(DEFAULT_CHAIN["annotation"].task, sids)]


def test_a_renderer_dying_mid_task_loses_nothing_and_counts_only_what_landed(stage_env, monkeypatch):
    from dreammask.shared import keys
    from dreammask.shared.skeleton import run_stage

    rt, renderer, job_id, sids = stage_env
    chunk = renderer._render_chunk
    calls = []

    def render_chunk(c, params, size):
        calls.append(len(c))
        if len(calls) == 2:
            raise RuntimeError("the GPU fell off the bus (injected by the test)")
        return chunk(c, params, size)

    monkeypatch.setattr(renderer, "_render_chunk", render_chunk)
    with pytest.raises(RuntimeError, match="fell off the bus"):
        run_stage(rt, "synthesis", job_id, sids)  # raising: the message is not acked, it is redelivered
    done = sorted(x.decode() for x in rt.redis.smembers(rt.tracker._k(job_id, "done", "synthesis")))
    on_disk = [s for s in sids if rt.store.exists(keys.image(job_id, s))]
    # The first batch's writes finished before the error left the task; the second batch never rendered.
    assert done == on_disk == sids[:2]
    assert not rt.dispatcher.pending  # nothing forwarded to annotation from a failed task

    # Redelivery renders only what is missing, and forwards all four.
    monkeypatch.setattr(renderer, "_render_chunk", chunk)
    out = run_stage(rt, "synthesis", job_id, sids)
    assert (out["done"], out["forwarded"]) == (2, 4)
    assert all(rt.store.exists(keys.image(job_id, s)) for s in sids)


def test_a_failed_write_fails_the_task_and_is_not_counted(stage_env, monkeypatch):
    from dreammask.shared import keys
    from dreammask.shared.skeleton import run_stage

    rt, renderer, job_id, sids = stage_env

    class FailingStore(GatedStore):
        def put_bytes(self, key, data, content_type=None):
            if f"/{sids[3]}." in key:
                raise OSError("disk full (injected by the test)")
            return self._store.put_bytes(key, data, content_type)

    monkeypatch.setattr(rt, "store", FailingStore(rt.store, set(), threading.Event()))
    with pytest.raises(OSError, match="disk full"):
        run_stage(rt, "synthesis", job_id, sids)
    done = sorted(x.decode() for x in rt.redis.smembers(rt.tracker._k(job_id, "done", "synthesis")))
    assert done == sids[:3] and not rt.store.exists(keys.image(job_id, sids[3]))


# ---------------------------------------------------------------------------- torch.compile

def test_compiled_unet_is_warmed_for_every_batch_size_and_never_recompiles(gligen_settings):
    """dynamo's own counters on the tiny model: with DREAMMASK_GLIGEN_COMPILE_SHAPES=all the warm-up
    traces each (batch size, fuser on/off) once; afterwards tasks of any size, with or without guidance,
    run compiled without a single new graph, and a shape the warm-up did not plan (another image size)
    runs on the eager UNet instead of compiling. The backend is "eager" (dynamo without inductor's code
    generation): recompiles are decided by dynamo's guards, the same whichever backend compiles."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    _, synthesis = gligen_settings
    settings = synthesis.model_copy(update={"gligen_torch_compile": True, "gligen_compile_backend": "eager",
                                            "gligen_batch_size": 2, "gligen_compile_shapes": "all",
                                            "gligen_compile_cache": False,
                                            "gligen_compile_blocking_limit_s": 1e9})
    torch._dynamo.reset()
    counters.clear()
    renderer = GligenRenderer.from_settings(settings)
    try:
        assert renderer.describe()["torch_compile"] is True
        renderer.warmup()
        assert renderer.compile_status["state"] == "serving" and renderer.compile_status["blocking"] is True
        warm_graphs = counters["stats"]["unique_graphs"]
        # sizes {1, 2} x guidance (UNet rows 2 and 4) + unguided 1 row, each with the fusers on and off
        assert warm_graphs == 6, dict(counters["stats"])
        layouts = scenes(3)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for n in (1, 2, 3):  # 3 = 2 + 1
                outs = renderer.render(layouts[:n], list(range(n)), PARAMS, TINY_IMAGE_SIZE)
                assert all(isinstance(o, RenderOutput) and o.info["compiled_unet"] for o in outs)
            unguided = PARAMS.model_copy(update={"guidance_scale": 1.0})
            outs = renderer.render(layouts[:2], [0, 1], unguided, TINY_IMAGE_SIZE)
            assert all(isinstance(o, RenderOutput) and o.info["compiled_unet"] for o in outs)
            # Another image size: not planned, so eager, and no compilation either.
            one_step = SynthesisParams(steps=1, guidance_scale=1.0, gligen_scheduled_sampling_beta=1.0)
            out = renderer.render(layouts[:1], [0], one_step, TINY_IMAGE_SIZE // 2)[0]
            assert isinstance(out, RenderOutput) and out.info["compiled_unet"] is False
        assert counters["stats"]["unique_graphs"] == warm_graphs
    finally:
        renderer.close()
        torch._dynamo.reset()
