"""torch.compile of the GLIGEN UNet, its warm-up, and its compiled artifacts cached on disk.

The compiled module is a *copy* of the UNet's module tree that shares every parameter and buffer with it
(`clone_sharing_weights`): it has its own gated fusers (their on/off switch is module state) and its own
dynamo guards, so it can be compiled in a background thread while the eager UNet serves tasks, and it
costs no weight memory. The warm-up renders each planned shape through it (`compile_plans`); afterwards
the loop sends exactly those shapes to it and every other shape to the eager UNet (`GligenBatchPipeline
.use_compiled`), so no task waits for a compilation.

Compiled artifacts are kept with torch's portable cache (`torch.compiler.save_cache_artifacts` /
`load_cache_artifacts`, the "mega-cache": inductor's FX graph cache, AOTAutograd's cache, Triton kernels
and autotuning results in one blob). A restarted worker loads the blob before compiling: dynamo traces
again, but inductor's code generation, kernel compilation and autotuning are cache hits. The file is named
by a key over everything the graphs depend on (`cache_spec`: torch and triton versions, GPU model, UNet
architecture, dtype, layout, attention fusion, compile options, shapes), not by the weights, which are
graph inputs. Next to it a small JSON records what was compiled and how long the warm-ups took; the
worker uses the last warm start it records to decide whether to block its start on the warm-up.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

from .model_loading import batch_size_set
from .settings import SynthesisSettings

log = logging.getLogger(__name__)

# What a compile warm-up without cache is assumed to cost until one was measured: the second GPU check
# (one H200, torch 2.11, whole UNet, the guided batch of 16, inductor "default") took 119 s of warm-up and
# 142 s from spawn to ready. (The first, with eight graphs, ran past 330 s without finishing.)
COLD_COMPILE_ESTIMATE_S = 120.0
CACHE_FORMAT = 1


def compile_plans(settings: SynthesisSettings) -> list[tuple[int, int, float]]:
    """(scenes, steps, guidance) of each warm-up render. Two steps with beta 0.5 trace the fusers on and
    off. "full": the guided full batch; "all": every batch size of `batch_size_set`, guided, and the
    unguided batch of one (unguided batches of 2, 4 ... are the guided graphs of 1, 2 ...)."""
    b = settings.gligen_batch_size
    if settings.gligen_compile_shapes == "full":
        return [(b, 2, 7.5)]
    return [(n, 2, 7.5) for n in batch_size_set(b)] + [(1, 2, 1.0)]


def compiled_shapes(plans: list[tuple[int, int, float]], latent_side: int) -> set[tuple[int, int, int]]:
    """The UNet inputs (rows, latent height, latent width) the warm-up compiles: guidance doubles rows."""
    return {(n * 2 if guidance > 1.0 else n, latent_side, latent_side) for n, _, guidance in plans}


def uses_cudagraphs(settings: SynthesisSettings, device: str) -> bool:
    return (device.startswith("cuda") and settings.gligen_compile_backend == "inductor"
            and settings.gligen_compile_mode in ("reduce-overhead", "max-autotune"))


def clone_sharing_weights(module):
    """A deep copy of a module tree whose parameters and buffers are the original tensors."""
    import torch

    memo: dict[int, Any] = {}
    for t in itertools.chain(module.parameters(), module.buffers()):
        memo[id(t)] = t
    with torch.no_grad():
        return copy.deepcopy(module, memo)


def compile_unet(unet, settings: SynthesisSettings, n_shapes: int):
    """The compiled copy of `unet` (see the module docstring)."""
    import torch

    # Each shape is traced with the fusers on and with them off (their switch is guarded on).
    limit = 2 * n_shapes + 2
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    clone = clone_sharing_weights(unet)
    backend = settings.gligen_compile_backend
    mode = settings.gligen_compile_mode if backend == "inductor" else None
    if settings.gligen_compile_scope == "blocks":
        # diffusers' regional compilation: every BasicTransformerBlock compiled in place (on the copy);
        # blocks of one shape share their compiled code.
        clone.compile_repeated_blocks(mode=mode, backend=backend, dynamic=False)
        return clone
    return torch.compile(clone, mode=mode, backend=backend, dynamic=False, fullgraph=False)


def cache_spec(pipe_unet, settings: SynthesisSettings, *, device: str, dtype: str, options: dict,
               shapes: set[tuple[int, int, int]]) -> dict[str, Any]:
    """What the compiled graphs depend on (weights excluded: they are inputs of the graphs)."""
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    gpu = None
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        gpu = f"{props.name} sm{props.major}{props.minor}"
    unet_config = {k: v for k, v in dict(pipe_unet.config).items() if not k.startswith("_")}
    return {
        "format": CACHE_FORMAT,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "device": gpu or "cpu",
        "unet_config": hashlib.sha256(json.dumps(unet_config, sort_keys=True, default=str).encode()).hexdigest()[:16],
        "dtype": dtype,
        "attention": options.get("attention"),
        "fused_qkv": options.get("fused_qkv"),
        "channels_last": options.get("channels_last"),
        "backend": settings.gligen_compile_backend,
        "mode": settings.gligen_compile_mode,
        "scope": settings.gligen_compile_scope,
        "shapes": sorted(list(s) for s in shapes),
    }


class CompileCache:
    """Compiled artifacts in one folder: `gligen-unet-<key>.bin` (torch's portable cache blob, absent for
    backends without artifacts such as "eager") and `gligen-unet-<key>.json` (what and how long)."""

    def __init__(self, directory: Path | None):
        self.directory = Path(directory) if directory is not None else None

    @staticmethod
    def key(spec: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.directory is not None
        return self.directory / f"gligen-unet-{key}.bin", self.directory / f"gligen-unet-{key}.json"

    def lookup(self, key: str) -> dict[str, Any] | None:
        if self.directory is None:
            return None
        blob, meta = self._paths(key)
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        if info.get("artifacts") and not blob.is_file():
            return None
        return info

    def expected_warmup_s(self, key: str) -> float:
        """How long a warm-up is expected to take: the last warm start measured from this entry; an entry
        not yet measured warm is assumed fast (the next start measures it); no entry is a cold compile."""
        info = self.lookup(key)
        if info is None:
            return COLD_COMPILE_ESTIMATE_S
        return float(info.get("warm_start_s") or 0.0)

    def load(self, key: str) -> dict[str, Any] | None:
        """Hot-load the entry's artifacts into torch's caches (before anything is compiled)."""
        import torch

        info = self.lookup(key)
        if info is None:
            return None
        if info.get("artifacts"):
            blob, _ = self._paths(key)
            t = time.perf_counter()
            torch.compiler.load_cache_artifacts(blob.read_bytes())
            info["load_s"] = round(time.perf_counter() - t, 3)
        return info

    def save(self, key: str, info: dict[str, Any], *, artifacts: bool) -> Path | None:
        """Write the entry (atomically: several workers may finish the same compile). `artifacts`: take
        torch's portable cache of this process now. Returns the metadata file, None where the folder
        cannot be written (logged with what to do)."""
        import torch

        if self.directory is None:
            return None
        blob, meta = self._paths(key)
        data = None
        if artifacts:
            saved = torch.compiler.save_cache_artifacts()
            data = saved[0] if saved else None
        info = {**info, "artifacts": data is not None, "bytes": len(data) if data else 0}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if data is not None:
                _atomic_write(blob, data)
            _atomic_write(meta, json.dumps(info, indent=1).encode())
        except OSError as e:
            log.warning("gligen: compiled artifacts not cached (%s: %s); mount %s writable or set "
                        "DREAMMASK_GLIGEN_COMPILE_CACHE_DIR to a writable folder, or every start compiles again",
                        type(e).__name__, e, self.directory)
            return None
        return meta

    def record_warm_start(self, key: str, seconds: float) -> None:
        info = self.lookup(key)
        if info is None:
            return
        info["warm_start_s"] = round(seconds, 3)
        try:
            _atomic_write(self._paths(key)[1], json.dumps(info, indent=1).encode())
        except OSError:
            pass  # a read-only cache keeps its entry; only this figure is not kept


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class UNetCompiler:
    """Compiles a copy of `loop.unet` for the planned shapes, warming it with real renders through a
    loop of its own (the serving loop is not touched), and reads/writes the artifact cache. `run` returns
    the compiled module; `status` says what happened (the renderer's describe() and the bench read it)."""

    def __init__(self, loop, settings: SynthesisSettings, *, cache: CompileCache | None, device: str,
                 dtype: str, options: dict, image_size: int):
        self.loop, self.settings, self.cache, self.device = loop, settings, cache, device
        self.image_size = image_size
        self.plans = compile_plans(settings)
        self.shapes = compiled_shapes(self.plans, image_size // loop.vae_scale_factor)
        self.cudagraphs = uses_cudagraphs(settings, device)
        spec = cache_spec(loop.unet, settings, device=device, dtype=dtype, options=options, shapes=self.shapes)
        self.key = CompileCache.key(spec) if cache is not None else None
        self.spec = spec
        self.cancelled = threading.Event()
        self.status: dict[str, Any] = {
            "state": "pending", "mode": settings.gligen_compile_mode, "backend": settings.gligen_compile_backend,
            "scope": settings.gligen_compile_scope, "shapes": sorted(list(s) for s in self.shapes),
            "cache": "off" if cache is None else "pending", "cache_key": self.key,
            "expected_warmup_s": self.expected_warmup_s(),
        }

    def expected_warmup_s(self) -> float:
        if self.cache is None or self.key is None:
            return COLD_COMPILE_ESTIMATE_S
        return self.cache.expected_warmup_s(self.key)

    def run(self):
        """Load the cache, compile, warm every plan; returns the compiled module (None if cancelled)."""
        from .gligen_loop import GligenBatchPipeline, GroundedPrompt

        t0 = time.perf_counter()
        self.status["state"] = "compiling"
        hit = self.cache.load(self.key) if self.cache is not None else None
        if self.cache is not None:
            self.status["cache"] = "hit" if hit is not None else "miss"
            if hit is not None and "load_s" in hit:
                self.status["cache_load_s"] = hit["load_s"]
        compiled = compile_unet(self.loop.unet, self.settings, len(self.shapes))
        src = self.loop
        # The compiled copy as this loop's own UNet: every shape goes to it, and compiles.
        warm = GligenBatchPipeline(src.vae, src.text_encoder, src.tokenizer, compiled, src.scheduler)
        warm.vae_slicing = src.vae_slicing
        per_plan = {}
        for batch, steps, guidance in self.plans:
            if self.cancelled.is_set():
                self.status["state"] = "cancelled"
                return None
            samples = [GroundedPrompt("a photo", ["object"], [[0.25, 0.25, 0.75, 0.75]], seed=k)
                       for k in range(batch)]
            t = time.perf_counter()
            # DDIM: exactly `steps` UNet passes, so each graph runs once here. With CUDA graphs a second
            # call would record one, and recording is best left to the serving thread (graphs recorded
            # here would be re-recorded there anyway: inductor keeps them per thread).
            warm(samples, height=self.image_size, width=self.image_size, num_inference_steps=steps,
                 guidance_scale=guidance, gligen_scheduled_sampling_beta=0.5, scheduler="ddim")
            per_plan[f"batch{batch}_{'guided' if guidance > 1.0 else 'unguided'}"] = round(time.perf_counter() - t, 3)
        seconds = time.perf_counter() - t0
        self.status.update({"warmup_s": round(seconds, 3), "warmup_s_by_shape": per_plan})
        if self.cache is not None:
            if hit is None:
                meta = self.cache.save(self.key, {"spec": self.spec, "created": time.time(),
                                                  "cold_warmup_s": round(seconds, 3),
                                                  "warmup_s_by_shape": per_plan},
                                       artifacts=self.settings.gligen_compile_backend == "inductor")
                self.status["cache_saved"] = meta is not None
                if meta is not None:
                    self.status["cache_file"] = str(meta)
            else:
                self.cache.record_warm_start(self.key, seconds)
        self.status["state"] = "compiled"
        return compiled

