"""DreamMask's FC-CLIP as a detectron2 meta architecture (needs detectron2).

detectron2 hands the model dicts whose "instances" is an `Instances` (gt_classes, gt_masks); this wrapper
turns them into the model's own input format and passes `is_synthetic` from the dataset dict through.
"""

from __future__ import annotations

import torch
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from dreammask.trainer.modeling import build_model


@META_ARCH_REGISTRY.register()
class DreamMaskFCCLIP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        inner = cfg.clone()
        inner.defrost()
        inner.MODEL.META_ARCHITECTURE = "FCCLIP"
        self.model = build_model(inner)

    def set_vocabulary(self, *args, **kwargs):
        return self.model.set_vocabulary(*args, **kwargs)

    def trainable_parameters(self):
        return self.model.trainable_parameters()

    @staticmethod
    def _convert(x: dict) -> dict:
        out = {k: v for k, v in x.items() if k != "instances"}
        inst = x.get("instances")
        if inst is not None and not isinstance(inst, dict):
            masks = inst.gt_masks
            masks = masks.tensor if hasattr(masks, "tensor") else masks
            out["instances"] = {"gt_classes": inst.gt_classes, "gt_masks": masks.to(torch.bool)}
        elif inst is not None:
            out["instances"] = inst
        out["is_synthetic"] = bool(x.get("is_synthetic", False))
        return out

    def forward(self, batched_inputs):
        return self.model([self._convert(x) for x in batched_inputs])
