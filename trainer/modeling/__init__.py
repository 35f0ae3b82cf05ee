"""FC-CLIP + DreamMask IAT model. `build_model(cfg)` builds the architecture named by
cfg.MODEL.META_ARCHITECTURE and moves it to cfg.MODEL.DEVICE."""

from __future__ import annotations

import torch
from torch import nn

from . import backbone, pixel_decoder, transformer_decoder  # noqa: F401  (fill the registries)
from .backbone.clip_convnext import load_clip_backbone
from .iat import ImaginationAidedTraining, MemoryBank, SRALoss
from .meta_arch import FCCLIP
from .registry import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    PIXEL_DECODER_REGISTRY,
    TRANSFORMER_DECODER_REGISTRY,
    Registry,
)


def build_model(cfg) -> nn.Module:
    device = torch.device(cfg.MODEL.DEVICE)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("MODEL.DEVICE is 'cuda' but no CUDA device is available; set MODEL.DEVICE cpu")
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    return model.to(device)


def build_model_on_meta(cfg) -> nn.Module:
    """The model of `cfg` with every tensor on the meta device: names and shapes only, no memory, no
    weights read (seconds even for ConvNeXt-L). For checking checkpoints against the architecture."""
    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


__all__ = [
    "BACKBONE_REGISTRY",
    "FCCLIP",
    "ImaginationAidedTraining",
    "META_ARCH_REGISTRY",
    "MemoryBank",
    "PIXEL_DECODER_REGISTRY",
    "Registry",
    "SRALoss",
    "TRANSFORMER_DECODER_REGISTRY",
    "build_model",
    "build_model_on_meta",
    "load_clip_backbone",
]
