"""The annotation pipeline: box-prompted masks, then scores, for every object of one image."""

from __future__ import annotations

import time

import numpy as np

from dreammask.shared.backends import MaskBackend, ScoreBackend
from dreammask.shared.masks import encode_rle
from dreammask.shared.schemas import RLE, InstanceAnnotation, SceneLayout


class AnnotationPipeline:
    def __init__(self, masks: MaskBackend, scores: ScoreBackend):
        self.masks = masks
        self.scores = scores
        self.last_timings: dict = {}  # the last `annotate_many`'s step times (`StepTimer.summary`)

    def streams(self) -> bool:
        """Whether the two backends run as one stream (SAM's chunks scored by CLIP as they come)."""
        return all(hasattr(self.masks, a) for a in ("stream", "new_run")) and \
            all(hasattr(self.scores, a) for a in ("begin", "score_chunk", "finish"))

    def annotate_many(self, images: list[np.ndarray], layouts: list[SceneLayout],
                      vocabulary: list[str]) -> list[list[InstanceAnnotation]]:
        """The instances of several scenes. SAM with CLIP run as one stream (`_annotate_streamed`); other
        backends with `segment_many`/`score_many` batch the scenes; the rest run scene by scene."""
        boxes = [self._boxes(img, lay) for img, lay in zip(images, layouts, strict=True)]
        if self.streams():
            return self._annotate_streamed(images, layouts, boxes, vocabulary)
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

    def _annotate_streamed(self, images, layouts, boxes, vocabulary) -> list[list[InstanceAnnotation]]:
        """SAM's masks chunk by chunk, each chunk scored by CLIP while SAM encodes the next (on a GPU the
        crops are cut from the images SAM already uploaded); RLE and areas in the host pool, off the
        device's path. Same instances as the two backends called one after the other."""
        sam, clip = self.masks, self.scores
        run = sam.new_run()
        targets = [[o.category for o in lay.objects] for lay in layouts]
        scoring = clip.begin(vocabulary, [t for ts in targets for t in ts], run)
        results: list[list] = [[] for _ in images]
        encoded: dict[tuple[int, int], object] = {}
        chunks = sam.stream(images, boxes, run, keep_images=clip.wants_device_images)
        try:
            for chunk in chunks:
                with run.timer.host_step("wait"):
                    done = [[f.result() for f in futures] for futures in chunk.results]
                items = []
                for k, res in zip(chunk.indices, done, strict=True):
                    results[k] = res
                    self._check_masks(images[k], boxes[k], res)
                    items.append((k, (images[k], [r.window for r in res], boxes[k], targets[k])))
                clip.score_chunk(scoring, items, chunk.images or None)
                for k, res in zip(chunk.indices, done, strict=True):
                    for i, r in enumerate(res):
                        encoded[k, i] = run.pool.submit(_rle_and_area, r.window, run.timer)
        finally:
            chunks.close()
        scores = clip.finish(scoring)
        with run.timer.host_step("wait"):
            stored = {key: f.result() for key, f in encoded.items()}
        summary = run.timer.summary()
        sam.last_timings, clip.last_timings = sam.timings(summary), clip.timings(summary)
        self.last_timings = summary
        return [self._instances(lay, b, r, None, scores.get(k, []), [stored[k, i] for i in range(len(r))])
                for k, (lay, b, r) in enumerate(zip(layouts, boxes, results, strict=True))]

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
    def _instances(layout, boxes, results, masks, scores, stored=None) -> list[InstanceAnnotation]:
        """`stored`: (RLE, area) per instance when already computed, else from `masks`."""
        if stored is None:
            stored = [(encode_rle(m), int(m.sum())) for m in masks]
        out = []
        for i, (obj, box, res, (rle, area), sc) in enumerate(zip(layout.objects, boxes, results, stored, scores)):
            out.append(InstanceAnnotation(
                instance_id=i + 1, category=obj.category, is_novel=obj.category == layout.novel_category,
                bbox=[round(float(c), 2) for c in box], mask=RLE(**rle), area=area,
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


def _rle_and_area(window, timer) -> tuple[dict, int]:
    t = time.perf_counter()
    out = window.rle(), window.area()
    timer.add_host("rle", time.perf_counter() - t)
    return out
