"""Mask2Former's set criterion: Hungarian matching, then cross-entropy on classes (down-weighted
no-object class) and point-sampled BCE + dice on the matched masks, at every decoder layer."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .matcher import HungarianMatcher
from .point_features import get_uncertain_point_coords_with_randomness, point_sample


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    inputs = inputs.sigmoid().flatten(1)
    numerator = 2 * (inputs * targets).sum(-1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


class SetCriterion(nn.Module):
    def __init__(
        self,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        eos_coef: float,
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        losses: tuple[str, ...] = ("labels", "masks"),
        iat: nn.Module | None = None,
    ) -> None:
        super().__init__()
        unknown = [n for n in losses if n not in self.LOSSES]
        if unknown:
            raise ValueError(f"unknown losses {unknown}; known: {sorted(self.LOSSES)}")
        if "sra" in losses and iat is None:
            raise ValueError("the 'sra' loss needs the IAT module (iat=...)")
        self.losses = list(losses)
        self.iat = iat
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def loss_labels(self, outputs, targets, indices, num_masks) -> torch.Tensor:
        logits = outputs["pred_logits"].float()
        num_classes = logits.shape[-1] - 1  # the last column is no-object (void)
        target_classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=logits.device)
        batch_idx, src_idx = self._src_permutation_idx(indices)
        if batch_idx.numel():
            target_classes[batch_idx, src_idx] = torch.cat(
                [t["labels"][j] for t, (_, j) in zip(targets, indices, strict=True)]
            )
        empty_weight = torch.ones(num_classes + 1, device=logits.device)
        empty_weight[-1] = self.eos_coef
        return F.cross_entropy(logits.transpose(1, 2), target_classes, empty_weight)

    def loss_masks(self, outputs, targets, indices, num_masks) -> tuple[torch.Tensor, torch.Tensor]:
        batch_idx, src_idx = self._src_permutation_idx(indices)
        src_masks = outputs["pred_masks"]
        if batch_idx.numel() == 0:
            zero = src_masks.sum() * 0.0  # keeps the graph connected when a batch has no objects
            return zero, zero
        src_masks = src_masks[batch_idx, src_idx][:, None].float()
        tgt_masks = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices, strict=True)])[
            :, None
        ].to(src_masks)
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                src_masks, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            point_labels = point_sample(tgt_masks, coords).squeeze(1)
        point_logits = point_sample(src_masks, coords).squeeze(1)
        return sigmoid_ce_loss(point_logits, point_labels, num_masks), dice_loss(
            point_logits, point_labels, num_masks
        )

    @staticmethod
    def _src_permutation_idx(indices):
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        return batch_idx, src_idx

    def _num_masks(self, targets, device) -> torch.Tensor:
        """Mean number of target masks per process, as a device scalar: the losses divide by it without a
        host sync (Mask2Former calls .item() here)."""
        num = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num)
            world = dist.get_world_size()
        return torch.clamp(num / world, min=1)[0]

    def loss_sra(self, outputs, targets, indices, num_masks) -> torch.Tensor:
        """DreamMask's IAT, last layer only: real objects feed the memory bank (their matched class
        embeddings, or with the "clip" feature source the targets' `iat_features`), synthetic objects'
        matched class embeddings are pulled to their class prototype. Unweighted like the other losses:
        LAMBDA_SRA is weight_dict["loss_sra"]."""
        return self.iat(
            outputs["pred_embeds"], indices, [t["labels"] for t in targets],
            [bool(t.get("is_synthetic", False)) for t in targets],
            real_features=[t.get("iat_features") for t in targets],
        )

    # name in `losses` -> (method, the keys it returns, computed on the auxiliary layers too)
    LOSSES = {
        "labels": ("loss_labels", ("loss_ce",), True),
        "masks": ("loss_masks", ("loss_mask", "loss_dice"), True),
        "sra": ("loss_sra", ("loss_sra",), False),
    }

    def get_loss(self, name, outputs, targets, indices, num_masks, suffix="") -> dict[str, torch.Tensor]:
        method, keys, _ = self.LOSSES[name]
        value = getattr(self, method)(outputs, targets, indices, num_masks)
        values = value if isinstance(value, tuple) else (value,)
        return {f"{k}{suffix}": v for k, v in zip(keys, values, strict=True)}

    def _layer_losses(self, outputs, targets, indices, num_masks, suffix="") -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name in self.losses:
            if suffix and not self.LOSSES[name][2]:
                continue  # last-layer-only losses (SRA) skip the auxiliary predictions
            out.update(self.get_loss(name, outputs, targets, indices, num_masks, suffix))
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
