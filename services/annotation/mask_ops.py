"""Mask helpers shared by the mask and score backends and the curation export.

COCO RLE is the storage form of every mask (``{"size": [h, w], "counts": str}``, pycocotools' compressed
counts decoded to ASCII so the dict is plain JSON). The clean-up and stability helpers work on numpy
arrays so any mask backend can use them, not only SAM.
"""

from __future__ import annotations

import numpy as np


def encode_rle(mask: np.ndarray) -> dict:
    """A boolean (H, W) mask as COCO compressed RLE: ``{"size": [h, w], "counts": str}``."""
    from pycocotools import mask as mask_utils

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode_rle takes one (H, W) mask; got an array of shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else str(counts),
    }


def decode_rle(rle) -> np.ndarray:
    """A boolean (H, W) mask from COCO compressed RLE (a dict, or anything with ``size``/``counts``).

    Uncompressed RLE (``counts`` as a list of run lengths, as some COCO files hold) is accepted too.
    """
    from pycocotools import mask as mask_utils

    if not isinstance(rle, dict):
        if hasattr(rle, "model_dump"):
            rle = rle.model_dump()
        else:
            raise ValueError(f"decode_rle takes a dict with 'size' and 'counts'; got {type(rle).__name__}")
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise ValueError("an RLE needs 'size': [height, width] and 'counts'") from None
    if isinstance(counts, list):
        if sum(int(c) for c in counts) != h * w:
            raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, not {h}x{w}={h * w}")
        compressed = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        compressed = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(compressed).astype(bool)


def rle_area(rle: dict) -> int:
    from pycocotools import mask as mask_utils

    return int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def mask_bbox(mask: np.ndarray) -> list[float]:
    """Tight pixel box ``[x0, y0, x1, y1]`` (x1/y1 exclusive) of a mask; zeros when it is empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


# ---------------------------------------------------------------------------- clean-up

def _regions(mask: np.ndarray, max_area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Remove islands ("islands") or fill holes ("holes") smaller than ``max_area`` pixels.

    The same rule as SAM's automatic mask generator (segment_anything.utils.amg.remove_small_regions),
    written here on OpenCV so it does not need segment-anything; returns (mask, changed).
    """
    import cv2

    assert mode in ("holes", "islands")
    correct_holes = mode == "holes"
    working = (correct_holes ^ mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[:, cv2.CC_STAT_AREA][1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < max_area]
    if not small:
        return mask, False
    fill = [0] + small
    if not correct_holes:
        # Keep every large island; when all are small keep the largest so the mask never vanishes.
        fill = [i for i in range(n) if i not in fill]
        if not fill:
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(labels, fill), True


def clean_mask(mask: np.ndarray, min_region_area: int = 0, min_hole_area: int = 0) -> np.ndarray:
    """Fill holes smaller than ``min_hole_area`` and drop islands smaller than ``min_region_area``.

    Holes first: filling a hole can merge what would have been separate small islands.
    """
    mask = np.asarray(mask, dtype=bool)
    if min_hole_area > 0:
        mask, _ = _regions(mask, min_hole_area, "holes")
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
