"""Loading a GLIGEN checkpoint from the models directory, once per worker process.

Weights come from a local diffusers folder (`from_pretrained` on a path); a hub id is used only where the
operator allows downloads. On CUDA the pipeline runs in float16 (with the fp16 weight files where the
folder has them), on CPU in float32. Every render records the folder and a revision hash computed here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dreammask.shared.devices import resolve_device as _resolve_device

from .settings import SynthesisSettings

log = logging.getLogger(__name__)

PIPELINE_CLASS = "StableDiffusionGLIGENPipeline"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack")


class ModelNotFound(FileNotFoundError):
    pass


class BadCheckpoint(ValueError):
    pass


@dataclass(frozen=True)
class LoadPlan:
    source: str  # local folder, or a hub id where downloads are allowed
    local: bool
    device: str  # "cpu", "cuda", "cuda:1" ...
    dtype: str  # "float32", "float16", "bfloat16"
    variant: str | None  # weight-file variant to load ("fp16"), None for the default files

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(requested: str, fallback: str = "auto") -> str:
    return _resolve_device(requested, fallback, setting="DREAMMASK_GLIGEN_DEVICE")


def resolve_dtype(requested: str, device: str) -> str:
    if requested != "auto":
        if device == "cpu" and requested == "float16":
            raise ValueError(
                "DREAMMASK_GLIGEN_DTYPE=float16 on CPU: half precision convolutions are slow or missing on CPU; "
                "use float32 (or auto)"
            )
        return requested
    return "float16" if device.startswith("cuda") else "float32"


def has_variant(folder: Path, variant: str) -> bool:
    """True where the UNet's weights exist as the `variant` files (e.g. diffusion_pytorch_model.fp16.safetensors)."""
    unet = folder / "unet"
    if not unet.is_dir():
        return False
    return any(
        f.name.endswith(tuple(f".{variant}{s}" for s in _WEIGHT_SUFFIXES)) or f".{variant}-" in f.name
        for f in unet.iterdir()
    )


def plan_load(settings: SynthesisSettings, models_dir: Path, *, device: str = "auto",
              allow_hub_downloads: bool = False) -> LoadPlan:
    """Where to load from, on which device, in which precision; checks the folder before any weight is read."""
    device = resolve_device(settings.gligen_device, device)
    dtype = resolve_dtype(settings.gligen_dtype, device)
    folder = settings.resolved_model_path(models_dir)
    if (folder / "model_index.json").is_file():
        check_checkpoint(folder)
        # fp16 files halve the read and skip an up-cast; only worth it where we run in half precision.
        variant = settings.gligen_variant if dtype == "float16" and has_variant(folder, settings.gligen_variant) else None
        return LoadPlan(source=str(folder.resolve()), local=True, device=device, dtype=dtype, variant=variant)
    if allow_hub_downloads and settings.gligen_hub_id:
        log.warning("GLIGEN folder %s missing; downloads are allowed, using %s", folder, settings.gligen_hub_id)
        return LoadPlan(source=settings.gligen_hub_id, local=False, device=device, dtype=dtype,
                        variant=settings.gligen_variant if dtype == "float16" else None)
    raise ModelNotFound(
        f"GLIGEN weights not found: {folder} has no model_index.json. Mount the diffusers folder of a GLIGEN "
        f"text-box generation checkpoint (e.g. {settings.gligen_hub_id}) there, or point "
        "DREAMMASK_GLIGEN_MODEL_PATH at it (relative to DREAMMASK_MODELS_DIR or absolute)."
    )


def check_checkpoint(folder: Path) -> dict[str, Any]:
    """Reject folders that are not a GLIGEN text-box generation checkpoint, saying what is wrong."""
    index = json.loads((folder / "model_index.json").read_text())
    missing = [c for c in COMPONENTS if not (folder / c).is_dir() or not index.get(c) or index[c][0] is None]
    if missing:
        raise BadCheckpoint(f"{folder} lacks the component(s) {', '.join(missing)} a GLIGEN pipeline needs")
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    attention_type = unet_cfg.get("attention_type", "default")
    if attention_type != "gated":
        raise BadCheckpoint(
            f"{folder}/unet has attention_type={attention_type!r}; the gligen backend needs a GLIGEN text-box "
            "checkpoint (attention_type 'gated', e.g. masterful/gligen-1-4-generation-text-box)"
        )
    if index.get("_class_name") != PIPELINE_CLASS:
        log.warning("%s declares %s, not %s; loading its components anyway", folder, index.get("_class_name"),
                    PIPELINE_CLASS)
    return index


def model_revision(folder: Path) -> dict[str, str]:
    """A revision hash of a checkpoint folder without reading its weights: sha256 over every config/
    tokenizer file's bytes and every weight file's name and size. A REVISION file (e.g. the hub commit
    the operator mounted) or a hub snapshot folder name is recorded next to it."""
    folder = Path(folder)
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    for p in files:
        rel = p.relative_to(folder).as_posix()
        if p.name.endswith(_WEIGHT_SUFFIXES):
            h.update(f"W {rel} {p.stat().st_size}\n".encode())
        else:
            h.update(f"F {rel}\n".encode())
            h.update(p.read_bytes())
    out = {"revision": "sha256:" + h.hexdigest()[:16]}
    revision_file = folder / "REVISION"
    if revision_file.is_file():
        out["source_revision"] = revision_file.read_text().strip()[:100]
    elif folder.parent.name == "snapshots":
        out["source_revision"] = folder.name
    return out


def load_pipeline(plan: LoadPlan):
    """The diffusers StableDiffusionGLIGENPipeline on the planned device, in eval mode, without the
    safety checker (the curation stage selects images; see docs/synthesis.md)."""
    import torch
    from diffusers import StableDiffusionGLIGENPipeline
    from diffusers.utils import logging as dlogging

    verbosity = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # the "deprecated pipeline" notice is expected: we own the loop
    try:
        pipe = StableDiffusionGLIGENPipeline.from_pretrained(
            plan.source,
            dtype=getattr(torch, plan.dtype),
            variant=plan.variant,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            local_files_only=plan.local,
        )
    finally:
        dlogging.set_verbosity(verbosity)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(plan.device)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    return pipe


def apply_memory_options(pipe, settings: SynthesisSettings) -> dict[str, Any]:
    """Attention processor, fused QKV projections, channels-last layout and VAE slicing/tiling; returns
    what was applied. torch.compile is the renderer's warm-up (`compilation.py`), not a load option."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    on_cuda = pipe.unet.device.type == "cuda"
    pipe.unet.set_attn_processor(AttnProcessor2_0() if settings.gligen_attention == "sdpa" else AttnProcessor())
    fuse = settings.gligen_fuse_qkv == "on" or (settings.gligen_fuse_qkv == "auto" and on_cuda
                                                 and settings.gligen_attention == "sdpa")
    if fuse:
        if settings.gligen_attention != "sdpa":
            raise ValueError("DREAMMASK_GLIGEN_FUSE_QKV=on needs DREAMMASK_GLIGEN_ATTENTION=sdpa (the fused "
                             "projections run in the SDPA processor); set one of them differently")
        with torch.no_grad():
            # One matmul for Q, K, V (self-attention) or K, V (cross-attention) instead of three or two;
            # the separate weights stay (unfuse_qkv_projections goes back to them).
            pipe.unet.fuse_qkv_projections()
            pipe.vae.fuse_qkv_projections()
    # "auto" is off: measured slower than the plain layout on an H200 (settings.py, docs/synthesis.md).
    channels_last = settings.gligen_channels_last == "on"
    # Set either way, so options applied again to a loaded pipeline (the bench's variants) take effect.
    layout = torch.channels_last if channels_last else torch.contiguous_format
    pipe.unet.to(memory_format=layout)
    pipe.vae.to(memory_format=layout)
    # "on" slices always (peak VAE memory stops growing with the batch); "auto" is handled by the loop,
    # which slices only after a whole-batch decode ran out of memory.
    if settings.gligen_vae_slicing == "on":
        pipe.vae.enable_slicing()
    else:
        pipe.vae.disable_slicing()
    if settings.gligen_enable_vae_tiling:
        pipe.vae.enable_tiling()
    return {
        "attention": settings.gligen_attention,
        "fused_qkv": fuse,
        "channels_last": channels_last,
        "vae_slicing": settings.gligen_vae_slicing,
        "vae_tiling": settings.gligen_enable_vae_tiling,
        "torch_compile": settings.gligen_torch_compile,
        **({"compile_backend": settings.gligen_compile_backend, "compile_mode": settings.gligen_compile_mode,
            "compile_scope": settings.gligen_compile_scope} if settings.gligen_torch_compile else {}),
    }


def batch_size_set(batch_size: int) -> list[int]:
    """Every GPU batch size the renderer cuts work into: the full batch and the powers of two below it
    (a tail of n scenes is rendered as its binary decomposition, 13 = 8 + 4 + 1)."""
    sizes = {batch_size}
    k = 1
    while k < batch_size:
        sizes.add(k)
        k *= 2
    return sorted(sizes)


def split_batches(n: int, batch_size: int) -> list[int]:
    """Batch sizes for n scenes: full batches, then the tail as descending powers of two."""
    sizes = [batch_size] * (n // batch_size)
    tail = n % batch_size
    bit = 1 << max(tail.bit_length() - 1, 0)
    while tail:
        if tail >= bit:
            sizes.append(bit)
            tail -= bit
        bit >>= 1
    return sizes
