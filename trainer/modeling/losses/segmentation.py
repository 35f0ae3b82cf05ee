"""Mask2Former's segmentation losses on the matched queries: cross-entropy on classes with a down-weighted
no-object class, and point-sampled BCE + dice on the masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..point_features import get_uncertain_point_coords_with_randomness, point_sample


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    inputs = inputs.sigmoid().flatten(1)
    numerator = 2 * (inputs * targets).sum(-1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def src_permutation_idx(indices) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, query index) of every matched query, over the batch."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src_idx = torch.cat([src for src, _ in indices])
    return batch_idx, src_idx


def labels(criterion, outputs, targets, indices, num_masks) -> torch.Tensor:
    logits = outputs["pred_logits"].float()
    num_classes = logits.shape[-1] - 1  # the last column is no-object (void)
    target_classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=logits.device)
    batch_idx, src_idx = src_permutation_idx(indices)
    if batch_idx.numel():
        target_classes[batch_idx, src_idx] = torch.cat(
            [t["labels"][j] for t, (_, j) in zip(targets, indices, strict=True)]
        )
    empty_weight = torch.ones(num_classes + 1, device=logits.device)
    empty_weight[-1] = criterion.eos_coef
    return F.cross_entropy(logits.transpose(1, 2), target_classes, empty_weight)


def masks(criterion, outputs, targets, indices, num_masks) -> tuple[torch.Tensor, torch.Tensor]:
    batch_idx, src_idx = src_permutation_idx(indices)
    src_masks = outputs["pred_masks"]
    if batch_idx.numel() == 0:
        zero = src_masks.sum() * 0.0  # keeps the graph connected when a batch has no objects
        return zero, zero
    src_masks = src_masks[batch_idx, src_idx][:, None].float()
    tgt_masks = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices, strict=True)])[:, None].to(src_masks)
    with torch.no_grad():
        coords = get_uncertain_point_coords_with_randomness(
            src_masks, criterion.num_points, criterion.oversample_ratio, criterion.importance_sample_ratio
        )
        point_labels = point_sample(tgt_masks, coords).squeeze(1)
    point_logits = point_sample(src_masks, coords).squeeze(1)
    return sigmoid_ce_loss(point_logits, point_labels, num_masks), dice_loss(point_logits, point_labels, num_masks)
