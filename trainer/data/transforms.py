"""Geometric augmentation on an image and its panoptic id map together, as FC-CLIP's detectron2 transforms
compute it.

Large-scale jitter (LSJ), FC-CLIP's COCO recipe (`coco_panoptic_new_baseline_dataset_mapper`): its list is
RandomFlip, then ResizeScale, then FixedSizeCrop, so the image is flipped first, scaled to fit
`scale * size` (scale uniform in [min, max]), cropped at a random offset and padded at the bottom and right
(image with 128, ids with void). Flipping first keeps the padding at the bottom-right of every crop.
Resizing is PIL's, as detectron2's ResizeTransform does for uint8 images: bilinear for the image, nearest
for the ids (detectron2 resizes the RGB-encoded panoptic PNG with nearest; the same pixels are picked).
Working on the id map, not on per-instance masks, keeps the cost independent of the number of segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .coco_panoptic import VOID

IMAGE_PAD_VALUE = 128


def resize_image(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (h, w, 3), PIL bilinear (detectron2's ResizeTransform on uint8 images)."""
    if (h, w) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_ids(ids: np.ndarray, h: int, w: int) -> np.ndarray:
    """Segment ids (H, W) -> (h, w), PIL nearest on int32 (ids are below 256^3)."""
    if (h, w) == ids.shape:
        return ids
    out = Image.fromarray(np.ascontiguousarray(ids, dtype=np.int32), mode="I").resize((w, h), Image.NEAREST)
    return np.asarray(out).astype(np.int64)


def shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge.get_output_shape: shorter side to `short`, longer side at most
    `max_size`, rounded half up."""
    scale = short * 1.0 / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


@dataclass
class LargeScaleJitter:
    size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    random_flip: bool = True

    def __post_init__(self):
        if self.size < 8:
            raise ValueError("INPUT.IMAGE_SIZE must be at least 8")
        if not (0 < self.min_scale <= self.max_scale):
            raise ValueError("INPUT needs 0 < MIN_SCALE <= MAX_SCALE")

    def __call__(self, image: np.ndarray, ids: np.ndarray, rng: np.random.Generator):
        """image (H, W, 3) uint8, ids (H, W) -> both (size, size), plus the valid (unpadded) region."""
        if self.random_flip and rng.random() < 0.5:
            image, ids = image[:, ::-1], ids[:, ::-1]
        # ResizeScale: fit the scaled target box, keeping the aspect ratio.
        h, w = image.shape[:2]
        scale = rng.uniform(self.min_scale, self.max_scale)
        factor = min(scale * self.size / h, scale * self.size / w)
        nh, nw = max(1, int(np.round(h * factor))), max(1, int(np.round(w * factor)))
        image = resize_image(np.ascontiguousarray(image), nh, nw)
        ids = resize_ids(ids, nh, nw)
        # FixedSizeCrop: one uniform draw places the crop along both axes, then pad bottom/right.
        u = rng.uniform(0.0, 1.0)
        y0 = int(np.round(max(nh - self.size, 0) * u))
        x0 = int(np.round(max(nw - self.size, 0) * u))
        image = image[y0:y0 + self.size, x0:x0 + self.size]
        ids = ids[y0:y0 + self.size, x0:x0 + self.size]
        ch, cw = image.shape[:2]
        out_img = np.full((self.size, self.size, 3), IMAGE_PAD_VALUE, dtype=np.uint8)
        out_ids = np.full((self.size, self.size), VOID, dtype=np.int64)
        valid = np.zeros((self.size, self.size), dtype=bool)
        out_img[:ch, :cw] = image
        out_ids[:ch, :cw] = ids
        valid[:ch, :cw] = True
        return out_img, out_ids, valid


@dataclass
class ResizeShortestEdge:
    """Evaluation resize: shorter side to `size` (0 keeps the image), longer side at most `max_size`."""

    size: int = 0
    max_size: int = 2560

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if not self.size:
            return image
        h, w = shortest_edge_size(image.shape[0], image.shape[1], self.size, self.max_size)
        return resize_image(image, h, w)
