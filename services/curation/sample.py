"""One scene turned into a curated sample: each kept mask decoded once, the panoptic label map painted, the
COCO fields and the YOLO outline computed. Everything the exporters need per scene, built in one place."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dreammask.shared.masks import decode_rle
from dreammask.shared.schemas import CuratedInstance, DatasetCategory, SceneAnnotation, SceneDecision


@dataclass
class Sample:
    """A kept scene in memory while its per-scene export pieces are written (one scene at a time)."""

    scene_id: str
    image: np.ndarray  # (H, W, 3) uint8
    image_png: bytes  # the rendered PNG as stored: copied into the dataset once, never re-encoded
    seg_map: np.ndarray  # (H, W) int32: segment_id of the front-most kept instance, 0 = void
    instances: list[CuratedInstance]
    novel_category: str | None
    caption: str | None


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def outline(mask: np.ndarray, max_points: int = 200) -> list[float]:
    """The largest outer contour of a mask as normalised x,y pairs (at least 3 points, else empty)."""
    h, w = mask.shape
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    c = max(contours, key=cv2.contourArea)
    if len(c) > max_points:  # simplify long outlines until they fit, keeping the shape
        eps = 0.5
        while len(c) > max_points:
            c = cv2.approxPolyDP(c, eps, True)
            eps *= 2
    pts = c.reshape(-1, 2)
    if len(pts) < 3:
        return []
    out: list[float] = []
    for x, y in pts:
        out += [round(float(x) / w, 6), round(float(y) / h, 6)]
    return out


def decode_masks(ann: SceneAnnotation) -> dict[int, np.ndarray]:
    """Every instance's mask, decoded once for the sample and the thumbnail alike."""
    return {i.instance_id: decode_rle(i.mask.model_dump()) for i in ann.instances}


def build_sample(ann: SceneAnnotation, decision: SceneDecision, image: np.ndarray, image_png: bytes,
                 categories: dict[str, DatasetCategory], metric_of, *, novel_category: str | None,
                 caption: str | None, masks: dict[int, np.ndarray]) -> Sample:
    kept = {d.instance_id for d in decision.instances if d.kept}
    insts = [i for i in ann.instances if i.instance_id in kept]
    h, w = image.shape[:2]
    masks = [masks[i.instance_id] for i in insts]
    seg_map = np.zeros((h, w), np.int32)
    # Larger instances painted first, so smaller ones in front stay visible.
    for seg_id, m in sorted(enumerate(masks, start=1), key=lambda t: -int(t[1].sum())):
        seg_map[m] = seg_id
    out = []
    for seg_id, (inst, m) in enumerate(zip(insts, masks), start=1):
        cat = categories[inst.category]
        visible = seg_map == seg_id
        out.append(CuratedInstance(
            instance_id=inst.instance_id, category=inst.category, category_id=cat.id, isthing=cat.isthing,
            is_novel=inst.is_novel, segmentation=inst.mask, area=int(m.sum()), bbox=_bbox(m), segment_id=seg_id,
            visible_area=int(visible.sum()), visible_bbox=_bbox(visible), polygon=outline(m),
            score=inst.scores.get(metric_of(inst)), scores=inst.scores, prompt_bbox=list(inst.bbox),
        ))
    return Sample(scene_id=ann.scene_id, image=image, image_png=image_png, seg_map=seg_map, instances=out,
                  novel_category=novel_category, caption=caption)
