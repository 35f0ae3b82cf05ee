"""Settings of the annotation service's model backends (SAM masks, CLIP scores).

Environment variables carry the `DREAMMASK_` prefix, e.g. ``DREAMMASK_SAM_CHECKPOINT``. Relative paths
are resolved against the core ``DREAMMASK_MODELS_DIR``. Light imports only (no torch here): the deployment
checks import this module to list the variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from dreammask.shared.devices import resolve_device as _resolve_device
from dreammask.shared.settings import Settings

# Prompt ensemble for the category texts; "{}" is replaced by the category name. A handful of CLIP's
# ImageNet templates that suit single objects cut out of a scene.
DEFAULT_PROMPT_TEMPLATES = [
    "a photo of a {}.",
    "a photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a good photo of a {}.",
    "a bright photo of a {}.",
    "a rendering of a {}.",
    "there is a {} in the scene.",
]


class AnnotationSettings(Settings):
    # ------------------------------------------------------------------ SAM
    # Checkpoint file (Meta's released `sam_vit_{h,l,b}_*.pth` state dicts), relative to the models dir.
    sam_checkpoint: Path = Path("sam/sam_vit_h_4b8939.pth")
    sam_model_type: Literal["vit_h", "vit_l", "vit_b"] = "vit_h"
    # Optional JSON describing a non-standard architecture (see backends/sam.py SamArchitecture); when
    # unset, a file named like the checkpoint with `.json` beside it is used if present, else the
    # standard hyper-parameters of `sam_model_type`.
    sam_architecture: Path | None = None
    # Boxes per mask-decoder call. 0 (auto): all boxes of an image in one call on a GPU; on the CPU as
    # many as keep the decoder's per-box copies of the image embedding about cache-sized (one box per
    # call for the standard SAM models: there the copies cost more than the per-call overhead saved).
    sam_decoder_batch_size: int = Field(0, ge=0, le=4096)
    # Images of a task per image-encoder call (the encoder dominates the cost; a batch fills a GPU).
    sam_encoder_batch_size: int = Field(4, ge=1, le=64)
    # The image encoder's attention: "sdpa" (one fused kernel per block, the relative-position terms as
    # its additive mask; same function, less memory traffic) or "stock" (segment-anything's own).
    sam_attention: Literal["sdpa", "stock"] = "sdpa"
    # Offset of the logit threshold used for SAM's stability score (SAM's automatic generator uses 1.0).
    sam_stability_offset: float = Field(1.0, gt=0.0)
    # Clean-up, in pixels of the original image: islands smaller than this are removed, holes smaller
    # than this are filled. 0 turns it off.
    mask_min_region_area: int = Field(100, ge=0)
    mask_min_hole_area: int = Field(100, ge=0)

    # ------------------------------------------------------------------ CLIP
    # open_clip model config name (built-in, e.g. "ViT-L-14", or the stem of `clip_model_config`), or
    # "local-dir:/path" holding open_clip_config.json and the weights.
    clip_model: str = "ViT-L-14"
    # Weights file (open_clip state dict, e.g. open_clip_pytorch_model.bin of laion/CLIP-ViT-L-14-*),
    # relative to the models dir. Ignored for "local-dir:" models.
    clip_pretrained: Path | None = Path("clip/ViT-L-14-laion2b_s32b_b82k.bin")
    # Optional custom open_clip model config (JSON with embed_dim, vision_cfg, text_cfg); its file stem
    # must equal `clip_model`.
    clip_model_config: Path | None = None
    clip_prompt_templates: list[str] = Field(default_factory=lambda: list(DEFAULT_PROMPT_TEMPLATES))
    # Weight of the masked-crop embedding in the instance embedding; the box crop gets 1 - this.
    clip_mask_weight: float = Field(0.5, ge=0.0, le=1.0)
    # Context added around the instance's box on each side, as a fraction of the box size.
    clip_crop_margin: float = Field(0.1, ge=0.0, le=2.0)
    clip_batch_size: int = Field(64, ge=1, le=4096)  # crops per image-encoder call
    # Crops per instance: "masked+box" (both, mixed by clip_mask_weight), "masked" or "box" (half the
    # image-encoder work; the other crop's cosine is then not reported).
    clip_views: Literal["masked+box", "masked", "box"] = "masked+box"
    # Where the crops are cut and resized: "device" (from the image already on the GPU), "host" (OpenCV),
    # "auto" (device on a GPU, host on the CPU).
    clip_crops: Literal["auto", "device", "host"] = "auto"
    clip_text_batch_size: int = Field(256, ge=1, le=65536)  # prompts per text-encoder call
    clip_text_cache_size: int = Field(8, ge=1, le=1024)  # vocabularies whose text embeddings stay cached

    # ------------------------------------------------------------------ both
    # Device for the annotation models; unset: the core DREAMMASK_DEVICE ("auto": CUDA when present).
    annotation_device: str | None = None
    # Half precision on CUDA (always fp32 on the CPU).
    annotation_fp16: bool = True
    # Threads for the host work done beside the device (image resizing, mask clean-up, RLE): -1 chooses
    # (none on the CPU, where device and host share the cores; up to 8 on a GPU machine), 0 none.
    annotation_host_threads: int = Field(-1, ge=-1, le=256)

    @field_validator("clip_prompt_templates")
    @classmethod
    def _templates(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one CLIP prompt template, e.g. 'a photo of a {}.'")
        for t in v:
            if t.count("{}") != 1:
                raise ValueError(f"prompt template {t!r} must contain '{{}}' exactly once (the category name)")
        return v

    def resolve(self, path: Path | None, models_dir: Path) -> Path | None:
        """An absolute path, or one relative to the models directory."""
        if path is None:
            return None
        path = Path(path).expanduser()
        return path if path.is_absolute() else Path(models_dir) / path


def resolve_device(requested: str | None, fallback: str = "auto") -> str:
    return _resolve_device(requested, fallback, setting="DREAMMASK_ANNOTATION_DEVICE")
