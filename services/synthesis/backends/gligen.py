"""Production layout-to-image backend: GLIGEN (diffusers) with a different layout per batch item.

Loaded once per worker process (`from_settings`, called by the registry after the fork), warmed up with
a one-step render, and released on shutdown. `render` trims layouts over GLIGEN's 30-object limit (keeping the novel category and the largest boxes), cuts the scenes into batches of
DREAMMASK_GLIGEN_BATCH_SIZE and renders each batch in one denoising loop (`GligenBatchPipeline`).
Every scene has its own generator seeded with the seed the platform passes, so it renders the same
image alone or in any batch.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path
from typing import Any

from dreammask.shared.backends import Failure, RenderBackend, RenderOutput
from dreammask.shared.schemas import LayoutObject, SceneLayout, SynthesisParams

from ..settings import SynthesisSettings

log = logging.getLogger(__name__)


def trim_objects(layout: SceneLayout, max_objects: int) -> tuple[list[LayoutObject], list[LayoutObject]]:
    """(kept, dropped). Over the limit, the novel category's objects stay first (the scene exists for
    them), then the largest boxes; kept objects keep their layout order."""
    objects = list(layout.objects)
    if len(objects) <= max_objects:
        return objects, []

    def is_novel(o: LayoutObject) -> bool:
        return o.is_novel or o.category == layout.novel_category

    ranked = sorted(range(len(objects)), key=lambda i: (not is_novel(objects[i]), -objects[i].area, i))
    keep = set(ranked[:max_objects])
    return ([o for i, o in enumerate(objects) if i in keep], [o for i, o in enumerate(objects) if i not in keep])


def prompt_for(layout: SceneLayout, objects: list[LayoutObject]) -> str:
    caption = " ".join((layout.caption or "").split())
    if caption:
        return caption
    names = list(dict.fromkeys(o.category for o in objects))
    return "a photo of " + ", ".join(names)


class GligenRenderer(RenderBackend):
    name = "gligen"
    requires_gpu = True  # runs on the CPU in float32 too, at a small fraction of the speed
    requires_weights = True

    def __init__(self, pipe, settings: SynthesisSettings, *, plan=None, revision: dict | None = None,
                 options: dict | None = None, models_dir: Path | None = None):
        from ..gligen_loop import GligenBatchPipeline

        self.settings = settings
        self._pipe = pipe
        self._loop = GligenBatchPipeline.from_pipe(pipe)
        self._plan = plan
        self._revision = revision or {}
        self._options = options or {}
        self._lock = threading.Lock()  # the fusers' on/off switch is module state: one render at a time
        self._warm = False
        self._models_dir = models_dir
        self._compiler = None
        self._compile_thread: threading.Thread | None = None
        self._compile_t0 = 0.0
        self._loop.vae_slicing = settings.gligen_vae_slicing
        self._loop.feature_cache_interval = settings.gligen_feature_cache_interval
        self.oom_splits = 0  # batches halved after running out of memory (the OOM test reads it)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def from_settings(cls, settings=None) -> GligenRenderer:
        from ..model_loading import apply_memory_options, load_pipeline, model_revision, plan_load

        synthesis = SynthesisSettings.of(settings)
        t0 = time.perf_counter()
        plan = plan_load(synthesis, synthesis.models_dir, device=synthesis.device,
                         allow_hub_downloads=synthesis.allow_hub_downloads)
        pipe = load_pipeline(plan)
        options = apply_memory_options(pipe, synthesis)
        revision = model_revision(Path(plan.source)) if plan.local else {"revision": f"hub:{plan.source}"}
        log.info("gligen loaded from %s (%s, %s on %s) in %.1fs", plan.source, revision.get("revision"),
                 plan.dtype, plan.device, time.perf_counter() - t0)
        return cls(pipe, synthesis, plan=plan, revision=revision, options=options, models_dir=synthesis.models_dir)

    def warmup(self) -> None:
        """Render once before the first task is taken (allocates the kernels' workspaces). With
        torch.compile on, the UNet is then compiled for the planned shapes (`compilation.compile_plans`)
        from the artifact cache where it has them: before the worker reports ready when the warm-up is
        expected to take at most DREAMMASK_GLIGEN_COMPILE_BLOCKING_LIMIT_S, otherwise in a background
        thread while tasks render with the eager UNet (the compiled copy is switched in between two
        batches when it is ready)."""
        from ..gligen_loop import GroundedPrompt

        size = self.settings.gligen_warmup_image_size or self._loop.native_image_size
        chunk = [(0, GroundedPrompt("a photo", ["object"], [[0.25, 0.25, 0.75, 0.75]], seed=0), [])]
        # Straight to the loop: the deployment's step/guidance bounds are for jobs, not for the warm-up.
        params = SynthesisParams(steps=1, guidance_scale=7.5, gligen_scheduled_sampling_beta=0.5)
        with self._lock:
            self._render_chunk(chunk, params, size)
        if self.settings.gligen_torch_compile:
            self._start_compile(size)
        self._warm = True

    def _start_compile(self, size: int) -> None:
        from ..compilation import CompileCache, UNetCompiler

        s = self.settings
        cache = None
        if s.gligen_compile_cache:
            from dreammask.shared.settings import get_settings

            models_dir = self._models_dir if self._models_dir is not None else get_settings().models_dir
            cache = CompileCache(s.resolved_compile_cache_dir(models_dir))
        device = self._plan.device if self._plan else str(self._loop.device)
        dtype = self._plan.dtype if self._plan else str(self._loop.dtype).removeprefix("torch.")
        compiler = UNetCompiler(self._loop, s, cache=cache, device=device, dtype=dtype, options=self._options,
                                image_size=size)
        self._compiler = compiler
        expected = compiler.status["expected_warmup_s"]
        blocking = expected <= s.gligen_compile_blocking_limit_s
        compiler.status["blocking"] = blocking
        self._compile_t0 = time.perf_counter()
        if blocking:
            self._compile_and_install(compiler)
        else:
            log.info("gligen: compile warm-up expected to take %.0f s (over DREAMMASK_GLIGEN_COMPILE_BLOCKING_LIMIT_S"
                     "=%.0f): serving with the eager UNet and compiling in the background", expected,
                     s.gligen_compile_blocking_limit_s)
            self._compile_thread = threading.Thread(target=self._compile_and_install, args=(compiler,),
                                                    name="gligen-compile", daemon=True)
            self._compile_thread.start()

    def _compile_and_install(self, compiler) -> None:
        try:
            compiled = compiler.run()
        except Exception as e:  # noqa: BLE001 - the eager UNet goes on serving; the failure is reported
            compiler.status.update(state="failed", error=f"{type(e).__name__}: {e}")
            log.exception("gligen: torch.compile failed; the eager UNet goes on serving")
            return
        if compiled is None:
            return
        with self._lock:
            if self._loop is None:
                return
            self._loop.use_compiled(compiled, compiler.shapes, cudagraphs=compiler.cudagraphs)
        compiler.status.update(state="serving", serving_after_s=round(time.perf_counter() - self._compile_t0, 3))
        log.info("gligen: compiled UNet serving (%s)", {k: compiler.status.get(k) for k in
                                                         ("cache", "warmup_s", "shapes")})

    @property
    def compile_status(self) -> dict[str, Any]:
        """What the compile warm-up did (state, cache hit or miss, seconds per shape); {} when off."""
        return dict(self._compiler.status) if self._compiler is not None else {}

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Block until a background compile has finished (tests, benchmarks); True when it serves."""
        if self._compile_thread is not None:
            self._compile_thread.join(timeout)
        return self.compile_status.get("state") == "serving"

    @property
    def pipeline(self):
        """The loaded diffusers StableDiffusionGLIGENPipeline (its components are what the loop runs)."""
        return self._pipe

    def ready(self) -> bool:
        return self._pipe is not None and self._warm

    def close(self) -> None:
        if self._compiler is not None:
            self._compiler.cancelled.set()  # a background compile stops at its next shape
        with self._lock:
            on_cuda = self._plan is not None and str(self._plan.device).startswith("cuda")
            self._loop = None
            self._pipe = None
            self._warm = False
            gc.collect()
            if on_cuda:
                import torch

                torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        plan = self._plan
        return {
            "backend": self.name,
            "model_path": plan.source if plan else None,
            "revision": self._revision.get("revision"),
            **({"source_revision": self._revision["source_revision"]} if "source_revision" in self._revision else {}),
            "dtype": plan.dtype if plan else str(self._loop.dtype).removeprefix("torch.") if self._loop else None,
            "variant": plan.variant if plan else None,
            "device": plan.device if plan else None,
            **self._options,
            "feature_cache_interval": self.settings.gligen_feature_cache_interval,
            **({"compile_state": self._compiler.status["state"]} if self._compiler is not None else {}),
        }

    def weight_files(self) -> tuple[list[str], str | None]:
        """Every weight file of the local checkpoint folder (hashed once per process for provenance)."""
        from ..model_loading import _WEIGHT_SUFFIXES

        if self._plan is None or not self._plan.local:
            return [], None
        folder = Path(self._plan.source)
        return [str(p) for p in folder.rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)], str(folder)

    # ------------------------------------------------------------------ rendering

    def render(self, layouts: list[SceneLayout], seeds: list[int], params: SynthesisParams,
               image_size: int) -> list[RenderOutput | Failure]:
        results: list[RenderOutput | Failure | None] = [None] * len(layouts)
        for batch in self.render_batches(layouts, seeds, params, image_size):
            for i, out in batch:
                results[i] = out
        return results  # type: ignore[return-value]

    def render_batches(self, layouts: list[SceneLayout], seeds: list[int], params: SynthesisParams,
                       image_size: int):
        """Yield [(index into layouts, output or Failure), ...] per GPU batch as soon as it is rendered,
        so the caller can encode and store one batch while the next one runs."""
        from ..gligen_loop import GroundedPrompt
        from ..model_loading import split_batches

        if len(layouts) != len(seeds):
            raise ValueError(f"{len(layouts)} layouts but {len(seeds)} seeds; give one seed per layout")
        if self._loop is None:
            raise RuntimeError("the gligen backend was closed; build a new one")
        # Trusts its inputs, validated once at their boundary: the layouts by their schema when read from
        # storage (at least the novel object, boxes normalised with x0 < x1 and y0 < y1, non-empty names);
        # steps, guidance and the image size (a multiple of 8, SD's VAE factor) against the deployment's
        # limits when the job was submitted (shared/schemas.py, JobSpec and JobLimits).
        work: list[tuple[int, GroundedPrompt, list[LayoutObject]]] = []
        for i, (layout, seed) in enumerate(zip(layouts, seeds, strict=True)):
            kept, dropped = trim_objects(layout, self.settings.gligen_max_objects)
            sample = GroundedPrompt(
                prompt=prompt_for(layout, kept),
                phrases=[o.category for o in kept],
                boxes=[list(o.box) for o in kept],
                seed=int(seed),
            )
            work.append((i, sample, dropped))

        start = 0
        for size in split_batches(len(work), self.settings.gligen_batch_size):
            chunk = work[start : start + size]
            start += size
            with self._lock:
                outputs = self._render_chunk(chunk, params, image_size)
            yield [(i, out) for (i, _, _), out in zip(chunk, outputs, strict=True)]

    def _render_chunk(self, chunk, params: SynthesisParams, image_size: int) -> list[RenderOutput]:
        import torch
        from PIL import Image

        from ..gligen_loop import free_cuda_memory, to_uint8

        t0 = time.perf_counter()
        out = None
        try:
            out = self._loop(
                [sample for _, sample, _ in chunk],
                height=image_size,
                width=image_size,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance_scale,
                gligen_scheduled_sampling_beta=params.gligen_scheduled_sampling_beta,
                negative_prompt=params.negative_prompt,
                scheduler=params.scheduler,
            )
        except torch.cuda.OutOfMemoryError:
            if not self.settings.gligen_split_on_oom or len(chunk) == 1:
                raise
        if out is None:
            # Out of memory. Retrying inside the `except` block would keep the traceback, hence the failed
            # attempt's frames and their latents and activations, alive during the retry; here they are
            # gone, and the allocator gets their memory back before the halves run. Halving is safe:
            # each scene's noise comes from its own generator, not from its batch slot.
            free_cuda_memory(self._loop.device)
            self.oom_splits += 1
            half = len(chunk) // 2
            log.warning("CUDA out of memory at batch %d; retrying as %d + %d", len(chunk), half, len(chunk) - half)
            return (self._render_chunk(chunk[:half], params, image_size)
                    + self._render_chunk(chunk[half:], params, image_size))
        seconds = (time.perf_counter() - t0) / len(chunk)
        model = self.describe()
        images = to_uint8(out.images)
        outputs = []
        for k, (_, sample, dropped) in enumerate(chunk):
            info = {
                **out.info,
                "requested_scheduler": params.scheduler,
                "prompt": sample.prompt,
                "prompt_truncated": out.prompt_truncated[k],
                "phrases": sample.phrases,
                "num_objects": len(sample.boxes),
                "dropped_objects": len(dropped),
                "batch_size": len(chunk),
                "seconds": round(seconds, 4),
                "dtype": model["dtype"],
                "model_path": model["model_path"],
                "model_revision": model["revision"],
            }
            outputs.append(RenderOutput(image=Image.fromarray(images[k], "RGB"), dropped=list(dropped), info=info))
        return outputs
