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

    def annotate_many(self, images: list[np.ndarray], layouts: list[SceneLayout],
                      vocabulary: list[str]) -> list[list[InstanceAnnotation]]:
        """The instances of several scenes. Backends with `segment_many`/`score_many` (SAM, CLIP) batch
        the scenes on the GPU; the others run scene by scene."""
        boxes = [self._boxes(img, lay) for img, lay in zip(images, layouts, strict=True)]
        segment_many = getattr(self.masks, "segment_many", None)
        if segment_many is not None:
            results = segment_many(list(images), boxes)
        else:
            results = [self.masks.segment(img, b) if len(b) else [] for img, b in zip(images, boxes, strict=True)]
        masks = [self._check_masks(img, b, r) for img, b, r in zip(images, boxes, results, strict=True)]
        targets = [[o.category for o in lay.objects] for lay in layouts]
        score_many = getattr(self.scores, "score_many", None)
        if score_many is not None:
            scores = score_many([(img, m, b, t) for img, m, b, t in zip(images, masks, boxes, targets, strict=True)],
                                vocabulary)
        else:
            scores = [self.scores.score(img, m, b, t, vocabulary) if m else []
                      for img, m, b, t in zip(images, masks, boxes, targets, strict=True)]
        return [self._instances(lay, b, r, m, sc)
                for lay, b, r, m, sc in zip(layouts, boxes, results, masks, scores, strict=True)]

    @staticmethod
    def _boxes(image: np.ndarray, layout: SceneLayout) -> np.ndarray:
        # Trusts the layout: its boxes are normalised with x0 < x1 and y0 < y1, checked by its schema when it
        # was read from storage.
        h, w = image.shape[:2]
        if not layout.objects:
            return np.zeros((0, 4), dtype=np.float64)
        scale = np.array([w, h, w, h], dtype=np.float64)
        return np.array([o.box for o in layout.objects], dtype=np.float64) * scale

    def _check_masks(self, image, boxes, results) -> list[np.ndarray]:
        h, w = image.shape[:2]
        if len(results) != len(boxes):
            raise RuntimeError(f"mask backend {self.masks.name!r} returned {len(results)} masks for {len(boxes)} boxes")
        masks = [np.asarray(r.mask, dtype=bool) for r in results]
        for m in masks:
            if m.shape != (h, w):
                raise RuntimeError(f"mask backend returned a {m.shape} mask for a {(h, w)} image")
        return masks

    @staticmethod
    def _instances(layout, boxes, results, masks, scores) -> list[InstanceAnnotation]:
        out = []
        for i, (obj, box, res, mask, sc) in enumerate(zip(layout.objects, boxes, results, masks, scores)):
            out.append(InstanceAnnotation(
                instance_id=i + 1, category=obj.category, is_novel=obj.category == layout.novel_category,
                bbox=[round(float(c), 2) for c in box], mask=RLE(**encode_rle(mask)), area=int(mask.sum()),
                scores={**{k: float(v) for k, v in res.scores.items()}, **{k: float(v) for k, v in sc.items()}},
            ))
        return out

    def __call__(self, image: np.ndarray, layout: SceneLayout, vocabulary: list[str]) -> list[InstanceAnnotation]:
        if not layout.objects:
            return []
        boxes = self._boxes(image, layout)
        results = self.masks.segment(image, boxes)
        masks = self._check_masks(image, boxes, results)
        scores = self.scores.score(image, masks, boxes, [o.category for o in layout.objects], vocabulary)
        return self._instances(layout, boxes, results, masks, scores)
