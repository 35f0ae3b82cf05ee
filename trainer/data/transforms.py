"""Geometric augmentation on an image and its panoptic id map together.

Large-scale jitter (LSJ), as detectron2's ResizeScale + FixedSizeCrop + RandomFlip in the Mask2Former and
FC-CLIP COCO recipe: scale the image so it fits `scale * size` (scale uniform in [min, max]), take a random
`size x size` crop, pad what is missing (image with 128, ids with void), flip horizontally half the time.
Working on the id map, not on per-instance masks, keeps the cost independent of the number of segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .coco_panoptic import VOID

IMAGE_PAD_VALUE = 128


def _resize(image: np.ndarray, ids: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    if (h, w) == image.shape[:2]:
        return image, ids
    interp = cv2.INTER_AREA if h < image.shape[0] else cv2.INTER_LINEAR
    image = cv2.resize(image, (w, h), interpolation=interp)
    # Ids are up to 256^3: nearest on int32 (cv2 resizes int32 with INTER_NEAREST).
    ids = cv2.resize(ids.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    return image, ids


@dataclass
class LargeScaleJitter:
    size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    random_flip: bool = True

    def __post_init__(self):
        if self.size < 8:
            raise ValueError("INPUT.LSJ.IMAGE_SIZE must be at least 8")
        if not (0 < self.min_scale <= self.max_scale):
            raise ValueError("INPUT.LSJ needs 0 < MIN_SCALE <= MAX_SCALE")

    def __call__(self, image: np.ndarray, ids: np.ndarray, rng: np.random.Generator):
        """image (H, W, 3) uint8, ids (H, W) -> both (size, size), plus the valid (unpadded) region."""
        h, w = image.shape[:2]
        scale = rng.uniform(self.min_scale, self.max_scale)
        factor = min(scale * self.size / h, scale * self.size / w)
        nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
        image, ids = _resize(image, ids, nh, nw)
        # Random crop where larger than the output.
        y0 = int(rng.integers(0, nh - self.size + 1)) if nh > self.size else 0
        x0 = int(rng.integers(0, nw - self.size + 1)) if nw > self.size else 0
        image = image[y0:y0 + self.size, x0:x0 + self.size]
        ids = ids[y0:y0 + self.size, x0:x0 + self.size]
        ch, cw = image.shape[:2]
        out_img = np.full((self.size, self.size, 3), IMAGE_PAD_VALUE, dtype=np.uint8)
        out_ids = np.full((self.size, self.size), VOID, dtype=np.int64)
        valid = np.zeros((self.size, self.size), dtype=bool)
        out_img[:ch, :cw] = image
        out_ids[:ch, :cw] = ids
        valid[:ch, :cw] = True
        if self.random_flip and rng.random() < 0.5:
            out_img, out_ids, valid = out_img[:, ::-1], out_ids[:, ::-1], valid[:, ::-1]
        return np.ascontiguousarray(out_img), np.ascontiguousarray(out_ids), np.ascontiguousarray(valid)


@dataclass
class ResizeShortestEdge:
    """Evaluation resize: shorter side to `size` (0 keeps the image), longer side at most `max_size`."""

    size: int = 0
    max_size: int = 2560

    def __call__(self, image: np.ndarray, ids: np.ndarray):
        if not self.size:
            return image, ids
        h, w = image.shape[:2]
        factor = self.size / min(h, w)
        if max(h, w) * factor > self.max_size:
            factor = self.max_size / max(h, w)
        return _resize(image, ids, int(round(h * factor)), int(round(w * factor)))
