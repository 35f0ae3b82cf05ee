"""Embedded mask backend: box-prompted GrabCut (OpenCV), one box at a time on the image."""

from __future__ import annotations

import cv2
import numpy as np

from dreammask.shared.backends import MaskBackend, MaskResult


class GrabCutMasks(MaskBackend):
    name = "grabcut"

    def __init__(self, iterations: int = 3, max_side: int = 384):
        self.iterations = iterations
        self.max_side = max_side  # GrabCut is O(pixels): run on a downscaled copy of big images

    def segment(self, image: np.ndarray, boxes: np.ndarray) -> list[MaskResult]:
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA) \
            if scale < 1 else image
        bgr = np.ascontiguousarray(small[..., ::-1])
        sh, sw = small.shape[:2]
        out = []
        for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            x0, y0, x1, y1 = (box * scale).round().astype(int)
            x0, y0 = max(0, x0), max(0, y0)
            x1, y1 = min(sw, x1), min(sh, y1)
            m = np.zeros((sh, sw), np.uint8)
            if x1 - x0 >= 3 and y1 - y0 >= 3:
                # A box that touches the image edges leaves GrabCut no background inside it:
                # fall back to the box itself then.
                if x0 == 0 and y0 == 0 and x1 == sw and y1 == sh:
                    m[:] = 1
                else:
                    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
                    gc = np.zeros((sh, sw), np.uint8)
                    try:
                        cv2.grabCut(bgr, gc, (int(x0), int(y0), int(x1 - x0), int(y1 - y0)), bgd, fgd,
                                    self.iterations, cv2.GC_INIT_WITH_RECT)
                        m = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
                    except cv2.error:
                        m[y0:y1, x0:x1] = 1
                m = _largest_component(m)
            mask = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool) if scale < 1 else m.astype(bool)
            out.append(MaskResult(mask=mask, scores={}))
        return out


def _largest_component(m: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 2:
        return m
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == biggest).astype(np.uint8)
