"""Point sampling on mask logits (detectron2's point_rend helpers), used by the matcher and the losses:
comparing masks at a few thousand points instead of every pixel keeps the mask losses cheap."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(inputs: torch.Tensor, point_coords: torch.Tensor, **kwargs) -> torch.Tensor:
    """inputs (N,C,H,W), point_coords (N,P,2) as (x,y) in [0,1] -> (N,C,P) bilinear samples."""
    grid = 2.0 * point_coords.unsqueeze(2) - 1.0
    return F.grid_sample(inputs, grid, align_corners=False, **kwargs).squeeze(3)


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Points near the decision boundary (logit ~ 0) are the uncertain ones."""
    return -torch.abs(logits)


def get_uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> torch.Tensor:
    """PointRend training sampling: oversample at random, keep the most uncertain share, fill up with
    uniform random points. coarse_logits (N,1,H,W) -> (N,num_points,2)."""
    n = coarse_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=coarse_logits.device)
    uncertainties = calculate_uncertainty(point_sample(coarse_logits, coords))
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(uncertainties[:, 0, :], k=num_uncertain, dim=1)[1]
    idx = idx + num_sampled * torch.arange(n, dtype=torch.long, device=coarse_logits.device)[:, None]
    coords = coords.view(-1, 2)[idx.view(-1), :].view(n, num_uncertain, 2)
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(n, num_random, 2, device=coarse_logits.device)], dim=1)
    return coords
