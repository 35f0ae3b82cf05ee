"""Embedded score backend: geometric mask-quality scores. They judge the mask's shape, not its label.

- box_fill: mask area / prompt-box area (a good object mask fills much of its box, not all of it);
- edge_agreement: share of the mask's boundary lying on image edges (Canny, dilated);
- compactness: 4πA / P² (1 for a disc; ragged masks score low);
- quality: the combination the selection thresholds read by default.
"""

from __future__ import annotations

import cv2
import numpy as np

from dreammask.shared.backends import ScoreBackend


def box_fill(mask: np.ndarray, box) -> float:
    x0, y0, x1, y1 = box
    area = max(1.0, (x1 - x0) * (y1 - y0))
    return float(min(1.0, mask.sum() / area))


def compactness(mask: np.ndarray) -> float:
    m = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0
    perim = sum(cv2.arcLength(c, True) for c in contours)
    return float(min(1.0, 4 * np.pi * m.sum() / max(perim, 1.0) ** 2))


def edge_agreement(mask: np.ndarray, edges: np.ndarray) -> float:
    m = mask.astype(np.uint8)
    boundary = m - cv2.erode(m, np.ones((3, 3), np.uint8))
    n = int(boundary.sum())
    if n == 0:
        return 0.0
    return float((edges[boundary > 0] > 0).mean())


def fill_score(fill: float) -> float:
    # Best between 0.5 and 0.95 of the box; a full box usually means the segmenter gave up.
    if fill < 0.5:
        return fill / 0.5
    if fill > 0.95:
        return max(0.0, 1.0 - (fill - 0.95) * 10)
    return 1.0


class GeometricScores(ScoreBackend):
    name = "geometric"

    def score(self, image, masks, boxes, targets, vocabulary):
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        edges = cv2.dilate(cv2.Canny(gray, 50, 150), np.ones((3, 3), np.uint8))
        out = []
        for mask, box in zip(masks, np.asarray(boxes).reshape(-1, 4)):
            fill = box_fill(mask, box)
            comp = compactness(mask)
            edge = edge_agreement(mask, edges)
            quality = 0.5 * fill_score(fill) + 0.3 * edge + 0.2 * comp if mask.any() else 0.0
            out.append({"box_fill": round(fill, 4), "edge_agreement": round(edge, 4),
                        "compactness": round(comp, 4), "quality": round(float(quality), 4)})
        return out
