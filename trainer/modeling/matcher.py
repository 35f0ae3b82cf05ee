"""Hungarian matching of predicted (class, mask) pairs to ground-truth objects (Mask2Former)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .point_features import point_sample


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """inputs (N,P) logits, targets (M,P) in {0,1} -> (N,M) dice loss of every pair."""
    inputs = inputs.sigmoid()
    numerator = 2 * torch.einsum("nc,mc->nm", inputs, targets)
    denominator = inputs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def batch_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """inputs (N,P) logits, targets (M,P) -> (N,M) mean per-point binary cross-entropy of every pair."""
    hw = inputs.shape[1]
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    loss = torch.einsum("nc,mc->nm", pos, targets) + torch.einsum("nc,mc->nm", neg, 1 - targets)
    return loss / hw


class HungarianMatcher(nn.Module):
    """cost = w_class * (-p(class)) + w_mask * BCE + w_dice * dice, masks compared at `num_points` random
    points shared by predictions and targets (all pixels when num_points is 0)."""

    def __init__(
        self, cost_class: float = 1.0, cost_mask: float = 1.0, cost_dice: float = 1.0, num_points: int = 0
    ):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matcher costs are 0")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    def cost_matrix(self, logits, pred_masks, tgt_classes, tgt_masks) -> torch.Tensor:
        """One image: logits (Q,K+1), pred_masks (Q,h,w), tgt_classes (M,), tgt_masks (M,H,W) -> (Q,M).
        In fp32 with autocast off, as FC-CLIP's matcher computes its costs: under fp16 autocast the BCE and
        dice einsums would round, and near-equal costs could pick another assignment."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self._cost_matrix(logits.float(), pred_masks.float(), tgt_classes, tgt_masks)

    def _cost_matrix(self, logits, pred_masks, tgt_classes, tgt_masks) -> torch.Tensor:
        out_prob = logits.softmax(-1)
        cost_class = -out_prob[:, tgt_classes]
        out_mask = pred_masks[:, None].float()
        tgt_mask = tgt_masks[:, None].to(out_mask)
        if self.num_points > 0:
            coords = torch.rand(1, self.num_points, 2, device=out_mask.device)
            tgt_pts = point_sample(tgt_mask, coords.repeat(tgt_mask.shape[0], 1, 1)).squeeze(1)
            out_pts = point_sample(out_mask, coords.repeat(out_mask.shape[0], 1, 1)).squeeze(1)
        else:
            if out_mask.shape[-2:] != tgt_mask.shape[-2:]:
                out_mask = F.interpolate(
                    out_mask, size=tgt_mask.shape[-2:], mode="bilinear", align_corners=False
                )
            tgt_pts, out_pts = tgt_mask.flatten(1), out_mask.flatten(1)
        cost_mask = batch_sigmoid_ce_cost(out_pts, tgt_pts)
        cost_dice = batch_dice_cost(out_pts, tgt_pts)
        return self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image, (prediction indices, target indices) of the optimal assignment."""
        indices = []
        for b, tgt in enumerate(targets):
            if tgt["labels"].numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty))
                continue
            c = self.cost_matrix(
                outputs["pred_logits"][b], outputs["pred_masks"][b], tgt["labels"], tgt["masks"]
            )
            c = torch.nan_to_num(c.float().cpu(), nan=1e4, posinf=1e4, neginf=-1e4)
            rows, cols = linear_sum_assignment(c.numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices
