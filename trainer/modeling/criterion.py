"""Mask2Former's set criterion: Hungarian matching, then the declared losses (trainer/modeling/losses/:
cross-entropy on classes, point-sampled BCE + dice on the matched masks, SRA) at every decoder layer."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .losses import LossDef, loss_def
from .matcher import HungarianMatcher


class SetCriterion(nn.Module):
    def __init__(
        self,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        eos_coef: float,
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        losses: tuple[str | LossDef, ...] = ("labels", "masks"),
        iat: nn.Module | None = None,
    ) -> None:
        """`losses`: LossDefs, or names declared in `LOSSES` (trainer/modeling/losses/__init__.py)."""
        super().__init__()
        self.losses: list[LossDef] = [d if isinstance(d, LossDef) else loss_def(d) for d in losses]
        self.iat = iat
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        for d in self.losses:
            missing = [a for a in d.needs if getattr(self, a, None) is None]
            if missing:
                raise ValueError(f"the {d.name!r} loss needs {', '.join(missing)} (SetCriterion({missing[0]}=...))")

    def _num_masks(self, targets, device) -> torch.Tensor:
        """Mean number of target masks per process, as a device scalar: the losses divide by it without a
        host sync (Mask2Former calls .item() here)."""
        num = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num)
            world = dist.get_world_size()
        return torch.clamp(num / world, min=1)[0]

    def _layer_losses(self, outputs, targets, indices, num_masks, suffix="") -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for d in self.losses:
            if suffix and not d.on_aux_layers:
                continue  # last-layer-only losses (SRA) skip the auxiliary predictions
            out.update(d(self, outputs, targets, indices, num_masks, suffix))
        return out

    def forward(self, outputs: dict, targets: list[dict]):
        """targets: per image {"labels": (M,), "masks": (M,H,W)} at the padded image size.

        Returns (unweighted losses, last-layer matching indices); aux-layer losses carry a `_{i}` suffix."""
        last = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        indices = self.matcher(last, targets)
        num_masks = self._num_masks(targets, outputs["pred_logits"].device)
        losses = self._layer_losses(last, targets, indices, num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_indices = self.matcher(aux, targets)
            losses.update(self._layer_losses(aux, targets, aux_indices, num_masks, suffix=f"_{i}"))
        return losses, indices
