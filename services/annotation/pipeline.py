"""The annotation pipeline: box-prompted masks, then scores, for every object of one image."""

from __future__ import annotations

import numpy as np

from dreammask.shared.backends import MaskBackend, ScoreBackend
from dreammask.shared.masks import encode_rle
from dreammask.shared.schemas import RLE, InstanceAnnotation, SceneLayout


class AnnotationPipeline:
    def __init__(self, masks: MaskBackend, scores: ScoreBackend):
        self.masks = masks
        self.scores = scores

    def __call__(self, image: np.ndarray, layout: SceneLayout, vocabulary: list[str]) -> list[InstanceAnnotation]:
        h, w = image.shape[:2]
        if not layout.objects:
            return []
        scale = np.array([w, h, w, h], dtype=np.float64)
        boxes = np.array([o.box for o in layout.objects], dtype=np.float64) * scale
        results = self.masks.segment(image, boxes)
        if len(results) != len(boxes):
            raise RuntimeError(f"mask backend {self.masks.name!r} returned {len(results)} masks for {len(boxes)} boxes")
        masks = [np.asarray(r.mask, dtype=bool) for r in results]
        for m in masks:
            if m.shape != (h, w):
                raise RuntimeError(f"mask backend returned a {m.shape} mask for a {(h, w)} image")
        targets = [o.category for o in layout.objects]
        scores = self.scores.score(image, masks, boxes, targets, vocabulary)
        out = []
        for i, (obj, box, res, mask, sc) in enumerate(zip(layout.objects, boxes, results, masks, scores)):
            out.append(InstanceAnnotation(
                instance_id=i + 1, category=obj.category, is_novel=obj.category == layout.novel_category,
                bbox=[round(float(c), 2) for c in box], mask=RLE(**encode_rle(mask)), area=int(mask.sum()),
                scores={**{k: float(v) for k, v in res.scores.items()}, **{k: float(v) for k, v in sc.items()}},
            ))
        return out
