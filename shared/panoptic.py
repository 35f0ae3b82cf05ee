"""The COCO panoptic PNG encoding of segment ids, in one place: id = R + 256·G + 256²·B (0 = void).
Curation writes it, the trainer and the tests read it."""

from __future__ import annotations

import numpy as np

VOID = 0


def rgb2id(color: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG (H, W, 3) -> segment ids; a 2-D array is taken as ids already."""
    color = np.asarray(color)
    if color.ndim == 2:
        return color.astype(np.int64)
    color = color[..., :3].astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids (H, W) -> the (H, W, 3) uint8 image COCO panoptic stores."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256**3:
        raise ValueError("panoptic segment ids must lie in [0, 256**3)")
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def id_to_rgb(seg_id: int) -> tuple[int, int, int]:
    return seg_id % 256, (seg_id // 256) % 256, seg_id // 65536
