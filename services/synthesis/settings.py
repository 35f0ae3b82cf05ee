"""Settings of the synthesis service's GLIGEN backend (environment variables `DREAMMASK_GLIGEN_*`).

Light module: no torch import, so the deployment checks can list these fields anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from dreammask.shared.settings import Settings

# GLIGEN's grounding tokens: the position net was trained with at most 30 objects per image, and the
# diffusers pipeline pads to exactly this many.
GLIGEN_MAX_OBJECTS = 30


class SynthesisSettings(Settings):
    # The diffusers folder of a GLIGEN text-box *generation* checkpoint (model_index.json, unet/, vae/,
    # text_encoder/, tokenizer/, scheduler/). Relative paths are under DREAMMASK_MODELS_DIR.
    gligen_model_path: Path = Path("gligen/diffusers-generation-text-box")
    # Used only where DREAMMASK_ALLOW_HUB_DOWNLOADS is true and the folder above is missing.
    gligen_hub_id: str = "masterful/gligen-1-4-generation-text-box"

    # "auto": float16 on CUDA (with the fp16 weight variant where the folder has it), float32 on CPU.
    gligen_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    gligen_variant: str = "fp16"
    # "auto" follows DREAMMASK_DEVICE; set e.g. "cuda:1" to pin this backend to one GPU.
    gligen_device: str = "auto"

    # Images per UNet forward (each counts twice with classifier-free guidance). The platform hands a
    # task DREAMMASK_SYNTHESIS_BATCH_SIZE scenes; the backend cuts them into batches of this size (tail
    # batches into powers of two, so a compiled UNet sees a fixed set of shapes). SD-1.4 GLIGEN at 512 px
    # in fp16 needs about 1 GiB per image of the batch on top of 3 GiB of weights: 4 on a 16 GiB card, 8 on
    # 24 GiB, 16 on 40-80 GiB, 32 on 141 GiB (docs/synthesis.md).
    gligen_batch_size: int = Field(8, ge=1, le=64)
    # On CUDA out-of-memory, free the failed attempt, halve the batch and go on (results do not depend
    # on the batch size).
    gligen_split_on_oom: bool = True

    # Memory and speed.
    gligen_attention: Literal["sdpa", "default"] = "sdpa"
    # "auto": decode the whole batch at once and fall back to one image at a time only after the VAE
    # ran out of memory (slicing costs throughput and buys nothing on a large card).
    gligen_vae_slicing: Literal["auto", "on", "off"] = "auto"
    gligen_enable_vae_tiling: bool = False
    # Channels-last weights and activations for the UNet's and the VAE's convolutions, and one projection
    # for Q, K and V (K and V in cross-attention) in every attention layer. Images stay equal to the plain
    # layout within the tolerance docs/synthesis.md states. Fused QKV "auto": on CUDA only (one H200,
    # batch 16: 6.15 vs 6.03 images/s plain; no gain on the CPU). Channels-last "auto": off everywhere,
    # because the same H200 run measured it slower (5.70 vs 6.03 images/s alone, 5.69 vs 6.15 with fused
    # QKV); "on" keeps it available for cards or versions where it measures faster.
    gligen_channels_last: Literal["auto", "on", "off"] = "auto"
    gligen_fuse_qkv: Literal["auto", "on", "off"] = "auto"
    # torch.compile of the UNet (docs/synthesis.md, "Compiled UNet"). A compiled copy sharing the
    # weights serves the shapes the warm-up compiled; any other shape runs eagerly, never recompiling.
    gligen_torch_compile: bool = False
    gligen_compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs",
                                 "max-autotune"] = "default"
    # The torch.compile backend; "eager" traces with dynamo only (tests count recompiles with it).
    gligen_compile_backend: str = "inductor"
    # "unet": the whole UNet as graphs (fastest to run, slowest to compile); "blocks": each transformer
    # block (diffusers' regional compilation: compiled once, reused by every block of the same shape).
    gligen_compile_scope: Literal["unet", "blocks"] = "unet"
    # Shapes compiled by the warm-up: "full" the guided full batch only (tail batches run eagerly; few
    # graphs, so a restart from the cache stays short); "all" every batch size the renderer cuts work
    # into (`batch_size_set`), guided, and the unguided batch of one.
    gligen_compile_shapes: Literal["full", "all"] = "full"
    # Compiled artifacts (torch's portable cache, `torch.compiler.save_cache_artifacts`) are kept here,
    # one file per model architecture, dtype, shapes, options, torch version and GPU; a restarted
    # worker loads them and skips code generation. Relative paths are under DREAMMASK_MODELS_DIR. A
    # read-only folder is only read (a worker that compiled says where the file should go).
    gligen_compile_cache: bool = True
    gligen_compile_cache_dir: Path = Path("compile-cache")
    # The worker blocks its start on the compile warm-up only when it expects the warm-up to take at most
    # this long (a cache entry measured that fast); otherwise it serves tasks with the eager UNet and
    # compiles in a background thread, switching over when done.
    gligen_compile_blocking_limit_s: float = Field(30.0, ge=0.0)
    # Deep-feature caching across denoising steps (DeepCache; docs/synthesis.md, "Feature caching"): the whole
    # UNet every this many steps and only its shallow branch in between. 1: off (the default; every step
    # exact). It changes the images, by a measured amount, and runs the eager UNet, so it is refused
    # together with torch.compile.
    gligen_feature_cache_interval: int = Field(1, ge=1, le=10)
    # Encoding PNGs and writing them to storage overlap the next GPU batch in this many threads; at most
    # this many scenes per thread wait for a writer before the renderer pauses.
    synthesis_writer_threads: int = Field(2, ge=1, le=32)
    synthesis_writer_queue_per_thread: int = Field(8, ge=1, le=256)
    # 0: the model's native size (unet.sample_size x VAE scale factor).
    gligen_warmup_image_size: int = Field(0, ge=0, le=4096)

    # Objects given to GLIGEN per image (extra ones are dropped, smallest first, and recorded). The limits
    # on steps, guidance and size are the deployment's (DREAMMASK_MAX_SYNTHESIS_STEPS, ...), checked once at
    # submission.
    gligen_max_objects: int = Field(GLIGEN_MAX_OBJECTS, ge=1, le=GLIGEN_MAX_OBJECTS)

    @model_validator(mode="after")
    def _feature_cache_runs_eagerly(self):
        if self.gligen_feature_cache_interval > 1 and self.gligen_torch_compile:
            raise ValueError(
                "DREAMMASK_GLIGEN_FEATURE_CACHE_INTERVAL above 1 runs the eager UNet, so the compiled one would "
                "never serve: set DREAMMASK_GLIGEN_TORCH_COMPILE=false, or the interval to 1")
        return self

    def resolved_model_path(self, models_dir: Path) -> Path:
        path = Path(self.gligen_model_path).expanduser()
        return path if path.is_absolute() else Path(models_dir) / path

    def resolved_compile_cache_dir(self, models_dir: Path) -> Path:
        path = Path(self.gligen_compile_cache_dir).expanduser()
        return path if path.is_absolute() else Path(models_dir) / path
