"""Mask helpers shared by the mask and score backends and the curation export.

COCO RLE is the storage form of every mask (``{"size": [h, w], "counts": str}``, pycocotools' compressed
counts decoded to ASCII so the dict is plain JSON). The clean-up and stability helpers work on numpy
arrays so any mask backend can use them, not only SAM.
"""

from __future__ import annotations

import numpy as np

# RLE lives in shared (curation and the API read masks too); re-exported for the backends.
from dreammask.shared.masks import decode_rle, encode_rle, rle_area  # noqa: E402,F401


def mask_bbox(mask: np.ndarray) -> list[float]:
    """Tight pixel box ``[x0, y0, x1, y1]`` (x1/y1 exclusive) of a mask; zeros when it is empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


# ---------------------------------------------------------------------------- clean-up

def _regions(mask: np.ndarray, max_area: int, mode: str, outside: int = 0) -> tuple[np.ndarray, bool]:
    """Remove islands ("islands") or fill holes ("holes") smaller than ``max_area`` pixels.

    The same rule as SAM's automatic mask generator (segment_anything.utils.amg.remove_small_regions),
    written here on OpenCV so it does not need segment-anything; returns (mask, changed). ``outside``:
    background pixels beyond this window that belong to the component of its corner (see `clean_mask`).
    """
    import cv2

    assert mode in ("holes", "islands")
    correct_holes = mode == "holes"
    working = (correct_holes ^ mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[:, cv2.CC_STAT_AREA][1:].copy()
    if outside and correct_holes and labels[0, 0]:
        sizes[labels[0, 0] - 1] += outside
    small = [i + 1 for i, s in enumerate(sizes) if s < max_area]
    if not small:
        return mask, False
    fill = [0] + small
    if not correct_holes:
        # Keep every large island; when all are small keep the largest so the mask never vanishes.
        fill = [i for i in range(n) if i not in fill]
        if not fill:
            fill = [int(np.argmax(sizes)) + 1]
    keep = np.zeros(n, dtype=bool)
    keep[fill] = True
    return keep[labels], True  # a lookup per pixel (np.isin sorts the labels)


def clean_mask(mask: np.ndarray, min_region_area: int = 0, min_hole_area: int = 0) -> np.ndarray:
    """Fill holes smaller than ``min_hole_area`` and drop islands smaller than ``min_region_area``.

    Holes first: filling a hole can merge what would have been separate small islands. The work runs on
    the mask's box plus a one-pixel background ring when that ring lies inside the image (most masks
    cover a small part of it): the ring joins everything outside the box into one component, whose
    pixels beyond the window are added to its size, so the result equals the whole-image rule.
    """
    mask = np.asarray(mask, dtype=bool)
    if min_hole_area <= 0 and min_region_area <= 0:
        return mask
    if not mask.any():
        return _clean_window(mask, min_region_area, min_hole_area, 0)
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0] - 1, rows[-1] + 2, cols[0] - 1, cols[-1] + 2
    outside = h * w - (y1 - y0) * (x1 - x0)
    if y0 < 0 or x0 < 0 or y1 > h or x1 > w or outside < max(min_hole_area, 1):
        # The box touches the border (the outside may fall apart), or the outside alone is a small
        # "hole": the whole image, as the rule states it.
        return _clean_window(mask, min_region_area, min_hole_area, 0)
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = _clean_window(mask[y0:y1, x0:x1], min_region_area, min_hole_area, outside)
    return out


def _clean_window(mask: np.ndarray, min_region_area: int, min_hole_area: int, outside: int) -> np.ndarray:
    if min_hole_area > 0:
        mask, _ = _regions(mask, min_hole_area, "holes", outside)
    if min_region_area > 0 and mask.any():
        mask, _ = _regions(mask, min_region_area, "islands")
    return mask


def stability_score(logits, mask_threshold: float = 0.0, offset: float = 1.0):
    """IoU between the mask thresholded at ``t + offset`` and at ``t - offset`` (SAM's stability score).

    A mask whose extent barely moves when the logit threshold shifts is confidently delimited. Works on
    torch tensors (batched, last two dims are H, W) and numpy arrays alike.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - numpy-only installs
        torch = None
    if torch is not None and isinstance(logits, torch.Tensor):
        high = (logits > (mask_threshold + offset)).sum(dim=(-1, -2), dtype=torch.int64)
        low = (logits > (mask_threshold - offset)).sum(dim=(-1, -2), dtype=torch.int64)
        return high.float() / low.clamp(min=1).float()
    logits = np.asarray(logits)
    high = (logits > (mask_threshold + offset)).sum(axis=(-1, -2))
    low = (logits > (mask_threshold - offset)).sum(axis=(-1, -2))
    return high / np.maximum(low, 1)
