"""The compiled UNet on the tiny GLIGEN checkpoint (CPU): images equal to the eager path within the stated
tolerance (whole-UNet and per-block compilation), tasks served eagerly while a compile runs in the
background, the artifact cache deciding whether a restart blocks, and torch's portable cache carrying
inductor's compiled code from one process to a fresh one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from tiny_gligen import TINY_IMAGE_SIZE

from dreammask.services.synthesis.backends.gligen import GligenRenderer
from dreammask.services.synthesis.compilation import COLD_COMPILE_ESTIMATE_S, CompileCache
from dreammask.shared.backends import RenderOutput
from dreammask.shared.schemas import LayoutObject, SceneLayout, SynthesisParams

PARAMS = SynthesisParams(steps=3, guidance_scale=7.5, gligen_scheduled_sampling_beta=0.4)
# The tolerance docs/synthesis.md states for the compiled UNet: stored PNGs within one grey level of the
# eager path's (float rounding of fused or reordered arithmetic).
PIXEL_TOL = 1


def scenes(n: int) -> list[SceneLayout]:
    names = ["awning", "stairway", "teapot", "kite"]
    return [SceneLayout(job_id="job1", scene_id=f"s{i:05d}", scene_index=i, novel_category=names[i % 4],
                        caption=f"a photo of a {names[i % 4]}",
                        objects=[LayoutObject(category=names[i % 4], box=[0.1, 0.1, 0.6, 0.7], is_novel=True),
                                 LayoutObject(category="bench", box=[0.3, 0.5, 0.9, 0.95])],
                        seed=i, backend="test") for i in range(n)]


def pixels(out) -> np.ndarray:
    return np.asarray(out.image, dtype=np.int16)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compiled_renderer(gligen_settings, **update) -> GligenRenderer:
    _, synthesis = gligen_settings
    settings = synthesis.model_copy(update={"gligen_torch_compile": True, "gligen_batch_size": 2,
                                            "gligen_compile_cache": False,
                                            "gligen_compile_blocking_limit_s": 1e9, **update})
    return GligenRenderer.from_settings(settings)


@pytest.mark.parametrize("backend,scope", [("aot_eager", "unet"), ("eager", "blocks")])
def test_compiled_images_equal_the_eager_path(gligen_settings, backend, scope):
    r = compiled_renderer(gligen_settings, gligen_compile_backend=backend, gligen_compile_scope=scope)
    try:
        r.warmup()
        status = r.compile_status
        assert status["state"] == "serving" and status["blocking"] and status["cache"] == "off"
        assert status["shapes"] == [[4, TINY_IMAGE_SIZE // 2, TINY_IMAGE_SIZE // 2]]  # guided batch of 2
        assert set(status["warmup_s_by_shape"]) == {"batch2_guided"}
        layouts, seeds = scenes(3), [5, 6, 7]
        calls = r._loop.compiled_calls
        compiled = r.render(layouts, seeds, PARAMS, TINY_IMAGE_SIZE)
        assert r._loop.compiled_calls > calls
        # The full batch of 2 ran compiled; the tail of 1 (not planned with shapes "full") eagerly.
        assert [o.info["compiled_unet"] for o in compiled] == [True, True, False]
        r._loop.use_compiled_unet = False
        eager = r.render(layouts, seeds, PARAMS, TINY_IMAGE_SIZE)
        assert not any(o.info["compiled_unet"] for o in eager)
        for a, b in zip(compiled, eager, strict=True):
            assert isinstance(a, RenderOutput)
            assert np.abs(pixels(a) - pixels(b)).max() <= PIXEL_TOL
        if scope == "blocks":
            # diffusers' regional compilation: the copy's transformer blocks are compiled, the UNet is not.
            blocks = [m for m in r._loop.compiled_unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
            assert blocks and all(m._compiled_call_impl is not None for m in blocks)
        if backend == "aot_eager":
            # The CUDA-graph handling (a step marker per pass, the output copied where the scheduler keeps
            # it: unguided) leaves the images as they were; 4 unguided scenes are the compiled 4 rows.
            from dreammask.services.synthesis.gligen_loop import GroundedPrompt

            samples = [GroundedPrompt(f"a photo of a kite {k}", ["kite"], [[0.2, 0.2, 0.8, 0.8]], seed=k)
                       for k in range(4)]
            kw = dict(height=TINY_IMAGE_SIZE, width=TINY_IMAGE_SIZE, num_inference_steps=3, guidance_scale=1.0)
            r._loop.use_compiled_unet = True
            r._loop.compiled_cudagraphs = True
            calls = r._loop.compiled_calls
            marked = r._loop(samples, **kw)
            assert marked.info["compiled_unet"] and r._loop.compiled_calls > calls
            r._loop.use_compiled_unet = False
            plain = r._loop(samples, **kw)
            assert np.abs(marked.images - plain.images).max() <= PIXEL_TOL / 255
        # The compiled copy shares the weights: no second copy in memory.
        eager_params = {p.data_ptr() for p in r._loop.unet.parameters()}
        assert {p.data_ptr() for p in r._loop.compiled_unet.parameters()} == eager_params
    finally:
        r.close()


GATE = threading.Event()


def gated_backend(gm, example_inputs):
    """A dynamo backend that holds the compilation until the test opens the gate (a slow compile)."""
    if not GATE.wait(120):
        raise TimeoutError("the test never opened the gate")
    return gm.forward


def test_tasks_render_eagerly_while_the_unet_compiles_in_the_background(gligen_settings):
    from torch._dynamo import register_backend

    register_backend(gated_backend, name="dreammask_test_gated")
    GATE.clear()
    # No cache: the warm-up is expected to take the cold estimate, far over a 30 s limit.
    r = compiled_renderer(gligen_settings, gligen_compile_backend="dreammask_test_gated",
                          gligen_compile_scope="blocks", gligen_compile_blocking_limit_s=30.0)
    try:
        r.warmup()  # returns while the compile waits at the gate
        assert r.ready()
        status = r.compile_status
        assert status["blocking"] is False and status["expected_warmup_s"] == COLD_COMPILE_ESTIMATE_S
        assert status["state"] == "compiling"
        layouts, seeds = scenes(2), [5, 6]
        during = r.render(layouts, seeds, PARAMS, TINY_IMAGE_SIZE)
        assert all(isinstance(o, RenderOutput) and o.info["compiled_unet"] is False for o in during)
        assert r.compile_status["state"] == "compiling"  # really rendered while the compile was held
        GATE.set()
        assert r.wait_compiled(120), r.compile_status
        after = r.render(layouts, seeds, PARAMS, TINY_IMAGE_SIZE)
        assert all(o.info["compiled_unet"] for o in after)
        for a, b in zip(after, during, strict=True):
            assert np.abs(pixels(a) - pixels(b)).max() <= PIXEL_TOL
        assert r.compile_status["serving_after_s"] > 0
    finally:
        GATE.set()
        r.close()


def test_a_failed_compile_leaves_the_eager_unet_serving(gligen_settings):
    r = compiled_renderer(gligen_settings, gligen_compile_backend="no_such_backend_xyz", gligen_compile_scope="blocks")
    try:
        r.warmup()
        assert r.ready() and r.compile_status["state"] == "failed"
        assert "no_such_backend_xyz" in r.compile_status["error"]
        out = r.render(scenes(2), [1, 2], PARAMS, TINY_IMAGE_SIZE)
        assert all(isinstance(o, RenderOutput) and not o.info["compiled_unet"] for o in out)
    finally:
        r.close()


def test_the_cache_entry_decides_whether_a_restart_blocks(gligen_settings, tmp_path):
    cache_dir = tmp_path / "compile-cache"
    # Per-block compilation with dynamo only: the quickest compile there is (the decision is the subject).
    common = dict(gligen_compile_backend="eager", gligen_compile_scope="blocks", gligen_compile_cache=True,
                  gligen_compile_cache_dir=cache_dir, gligen_compile_blocking_limit_s=30.0)

    first = compiled_renderer(gligen_settings, **common)  # no entry: cold, so in the background
    try:
        first.warmup()
        assert first.compile_status["blocking"] is False
        assert first.wait_compiled(300), first.compile_status
        assert first.compile_status["cache"] == "miss" and first.compile_status["cache_saved"] is True
    finally:
        first.close()
    entries = list(cache_dir.glob("gligen-unet-*.json"))
    assert len(entries) == 1
    meta = json.loads(entries[0].read_text())
    # The "eager" backend generates no code: the entry records the compile, with no artifact blob.
    assert meta["artifacts"] is False and meta["cold_warmup_s"] > 0 and "warm_start_s" not in meta
    assert meta["spec"]["shapes"] == [[4, TINY_IMAGE_SIZE // 2, TINY_IMAGE_SIZE // 2]]

    second = compiled_renderer(gligen_settings, **common)  # entry present, not yet measured warm: blocks
    try:
        second.warmup()
        assert second.compile_status["cache"] == "hit" and second.compile_status["blocking"] is True
        assert second.compile_status["state"] == "serving"
    finally:
        second.close()
    warm = json.loads(entries[0].read_text())["warm_start_s"]
    assert warm > 0

    # A limit below the warm start measured last time: the next restart compiles in the background.
    third = compiled_renderer(gligen_settings, **{**common, "gligen_compile_blocking_limit_s": warm / 10})
    try:
        third.warmup()
        assert third.compile_status["blocking"] is False and third.compile_status["expected_warmup_s"] == warm
        assert third.wait_compiled(300)
    finally:
        third.close()



def test_a_cache_folder_that_cannot_be_written_is_reported_and_serving_goes_on(gligen_settings, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be (as a read-only mount refuses writes)")
    r = compiled_renderer(gligen_settings, gligen_compile_backend="eager", gligen_compile_scope="blocks",
                          gligen_compile_cache=True, gligen_compile_cache_dir=blocker / "compile-cache")
    try:
        r.warmup()
        assert r.wait_compiled(300) and r.compile_status["cache"] == "miss"
        assert r.compile_status["cache_saved"] is False
        assert "DREAMMASK_GLIGEN_COMPILE_CACHE_DIR" in caplog.text
        assert all(o.info["compiled_unet"] for o in r.render(scenes(2), [1, 2], PARAMS, TINY_IMAGE_SIZE))
    finally:
        r.close()


MEGA_CACHE_CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import torch
    from torch._dynamo.utils import counters
    from dreammask.services.synthesis.compilation import CompileCache

    torch.set_num_threads(1)
    cache, key = CompileCache(Path(sys.argv[1])), "k"
    hit = cache.load(key)
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.GroupNorm(4, 8), torch.nn.SiLU())
    x = torch.randn(2, 4, 16, 16)
    c = torch.compile(m, backend="inductor")
    t = time.perf_counter()
    with torch.no_grad():
        y = c(x)
        ok = torch.allclose(y, m(x), atol=1e-5)
    seconds = time.perf_counter() - t
    if hit is None:
        cache.save(key, {"cold_warmup_s": seconds}, artifacts=True)
    print(json.dumps({"hit": hit is not None, "seconds": seconds, "same": ok,
                      "fx_hits": counters["inductor"]["fxgraph_cache_hit"],
                      "fx_misses": counters["inductor"]["fxgraph_cache_miss"]}))
""")


@pytest.mark.slow
def test_inductor_artifacts_carry_over_to_a_fresh_process(tmp_path):
    """Two processes, each with an empty local inductor cache (a new pod): the second one finds the
    compiled code in the artifact file the first one wrote, and generates none."""
    cache_dir = tmp_path / "models" / "compile-cache"

    def child(n: int) -> dict:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{n}"), "OMP_NUM_THREADS": "1"}
        p = subprocess.run([sys.executable, "-c", MEGA_CACHE_CHILD, str(cache_dir)], capture_output=True,
                           text=True, timeout=600, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
        return json.loads(p.stdout.strip().splitlines()[-1])

    cold = child(1)
    assert not cold["hit"] and cold["same"] and cold["fx_misses"] == 1 and cold["fx_hits"] == 0
    meta = json.loads(next(cache_dir.glob("*.json")).read_text())
    assert meta["artifacts"] is True and meta["bytes"] > 0
    warm = child(2)
    assert warm["hit"] and warm["same"] and warm["fx_hits"] == 1 and warm["fx_misses"] == 0


def test_cache_key_depends_on_what_the_graphs_depend_on():
    base = {"torch": "2.14.1", "shapes": [[4, 32, 32]], "mode": "default", "dtype": "float16"}
    assert CompileCache.key(base) == CompileCache.key(dict(reversed(list(base.items()))))
    for k, v in (("torch", "2.11.0"), ("shapes", [[8, 32, 32]]), ("mode", "reduce-overhead"), ("dtype", "bfloat16")):
        assert CompileCache.key({**base, k: v}) != CompileCache.key(base)


def test_the_cache_can_be_filled_once_from_the_command_line(gligen_models_dir, tmp_path):
    """`python -m dreammask.services.synthesis.fill_compile_cache` with the workers' settings writes the entry
    that their (read-only) cache folder will then hold."""
    from tiny_gligen import TINY_MODEL_SUBPATH

    cache_dir = tmp_path / "compile-cache"
    env = {**os.environ, "DREAMMASK_MODELS_DIR": str(gligen_models_dir), "DREAMMASK_DEVICE": "cpu",
           "DREAMMASK_GLIGEN_MODEL_PATH": TINY_MODEL_SUBPATH, "DREAMMASK_GLIGEN_BATCH_SIZE": "2",
           "DREAMMASK_GLIGEN_WARMUP_IMAGE_SIZE": str(TINY_IMAGE_SIZE), "DREAMMASK_GLIGEN_COMPILE_BACKEND": "eager",
           "DREAMMASK_GLIGEN_COMPILE_SCOPE": "blocks", "DREAMMASK_GLIGEN_COMPILE_CACHE_DIR": str(cache_dir),
           "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "dreammask.services.synthesis.fill_compile_cache"], capture_output=True,
                       text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    status = json.loads(p.stdout)
    assert status["state"] == "serving" and status["cache"] == "miss" and status["cache_saved"] is True
    meta = json.loads(Path(status["cache_file"]).read_text())
    assert meta["spec"]["scope"] == "blocks" and meta["spec"]["shapes"] == [[4, TINY_IMAGE_SIZE // 2, TINY_IMAGE_SIZE // 2]]
