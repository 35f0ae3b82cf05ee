"""Embedded layout backend: a context prior sampler.

Per-category size classes (area range, aspect ratio, where it sits in the frame), context categories
drawn from C_train weighted by semantic relatedness to the scene's novel category, and rejection
sampling under an overlap limit. The scene's novel category is always present and clearly visible.
Reproducible: every draw comes from the generator seeded by the scene's layout seed (from the job's plan).
"""

from __future__ import annotations

import math

import numpy as np

from dreammask.shared.backends import Failure, LayoutBackend, LayoutRequest
from dreammask.shared.schemas import LayoutObject, SceneLayout, normalise_name

from ..embedding_model import get_text_embedder

# size class: (min area, max area, min aspect w/h, max aspect w/h)
SIZE_CLASSES = {
    "background": (0.25, 0.6, 2.0, 5.0),
    "large": (0.08, 0.28, 0.6, 2.2),
    "medium": (0.025, 0.09, 0.5, 2.0),
    "small": (0.006, 0.025, 0.6, 1.6),
    "tall": (0.03, 0.14, 0.25, 0.6),
}
BACKGROUND_WORDS = {
    "sky", "wall", "floor", "ceiling", "road", "grass", "sea", "river", "water", "sand", "snow", "mountain",
    "pavement", "dirt", "field", "playingfield", "ground", "rug", "carpet", "gravel", "railroad", "roof",
}
TOP_BACKGROUND = {"sky", "ceiling", "roof", "mountain"}
LARGE_WORDS = {
    "bed", "couch", "sofa", "car", "bus", "truck", "train", "airplane", "boat", "table", "refrigerator", "house",
    "tent", "horse", "elephant", "giraffe", "cow", "bear", "piano", "wardrobe", "cabinet", "desk", "building",
    "bridge", "tree", "ship", "counter", "shelf", "bench", "motorcycle", "zebra", "tractor", "van",
}
SMALL_WORDS = {
    "cup", "spoon", "fork", "knife", "phone", "mouse", "remote", "scissors", "toothbrush", "book", "bottle",
    "clock", "vase", "bowl", "apple", "banana", "orange", "donut", "sandwich", "glass", "mug", "pen", "key",
    "ball", "hat", "shoe", "watch", "cellphone", "can", "egg", "candle", "lamp", "plate", "towel",
}
TALL_WORDS = {"person", "man", "woman", "child", "bottle", "lamp", "pole", "tower", "giraffe", "door", "curtain"}

MAX_IOU = 0.3
MIN_NOVEL_AREA = 0.04


def size_class(name: str) -> str:
    words = set(normalise_name(name).split())
    if words & BACKGROUND_WORDS:
        return "background"
    if words & TALL_WORDS:
        return "tall"
    if words & LARGE_WORDS:
        return "large"
    if words & SMALL_WORDS:
        return "small"
    return "medium"


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _covered(novel: list[float], other: list[float]) -> float:
    ix = max(0.0, min(novel[2], other[2]) - max(novel[0], other[0]))
    iy = max(0.0, min(novel[3], other[3]) - max(novel[1], other[1]))
    return ix * iy / ((novel[2] - novel[0]) * (novel[3] - novel[1]))


def sample_box(g: np.random.Generator, cls: str, min_area: float = 0.0, name: str = "") -> list[float]:
    a0, a1, r0, r1 = SIZE_CLASSES[cls]
    area = float(np.exp(g.uniform(math.log(max(a0, min_area)), math.log(max(a1, min_area * 1.5)))))
    aspect = float(np.exp(g.uniform(math.log(r0), math.log(r1))))
    w = min(0.98, math.sqrt(area * aspect))
    h = min(0.98, area / w)
    if cls == "background":
        w = 1.0
        h = min(0.6, area)
        top = normalise_name(name).split()[0] in TOP_BACKGROUND if name else False
        y0 = 0.0 if top else 1.0 - h
        return [0.0, round(y0, 4), 1.0, round(y0 + h, 4)]
    x0 = float(g.uniform(0.01, 0.99 - w))
    # Objects stand on the ground: bottoms fall in the lower part of the frame.
    bottom = float(g.uniform(max(h + 0.01, 0.5), 0.99))
    return [round(x0, 4), round(bottom - h, 4), round(x0 + w, 4), round(bottom, 4)]


class PriorLayoutSampler(LayoutBackend):
    name = "prior"

    def __init__(self, settings=None, embedder=None):
        self.settings = settings
        self._embedder = embedder

    @classmethod
    def from_settings(cls, settings):
        return cls(settings)

    def _context_weights(self, novel: str, train: list[str]) -> np.ndarray:
        try:
            if self._embedder is None:
                self._embedder = get_text_embedder(self.settings)
            emb = self._embedder.encode([normalise_name(novel)] + [normalise_name(t) for t in train])
            sims = emb[1:] @ emb[0]
            w = np.exp((sims - sims.max()) / 0.1)
        except Exception:  # noqa: BLE001 - no embedder: fall back to uniform co-occurrence
            w = np.ones(len(train))
        return w / w.sum()

    def plan(self, requests: list[LayoutRequest]) -> list[SceneLayout | Failure]:
        out: list[SceneLayout | Failure] = []
        for req in requests:
            try:
                out.append(self._plan_one(req))
            except Exception as e:  # noqa: BLE001 - one scene's failure must not sink the batch
                out.append(Failure(f"layout sampling failed: {type(e).__name__}: {e}"))
        return out

    def _plan_one(self, req: LayoutRequest) -> SceneLayout:
        g = np.random.default_rng(req.seed)  # the scene's layout seed: the same scene plans the same
        novel = req.novel.name
        objects: list[LayoutObject] = []
        weights = self._context_weights(novel, req.train)
        things = [i for i, t in enumerate(req.train) if size_class(t) != "background"]
        stuff = [i for i, t in enumerate(req.train) if size_class(t) == "background"]

        if stuff and g.random() < 0.6:
            w = weights[stuff] / weights[stuff].sum()
            name = req.train[stuff[int(g.choice(len(stuff), p=w))]]
            objects.append(LayoutObject(category=name, box=sample_box(g, "background", name=name)))

        novel_cls = size_class(novel)
        novel_cls = "large" if novel_cls == "background" else novel_cls
        novel_box = sample_box(g, novel_cls, min_area=MIN_NOVEL_AREA)
        placed = [novel_box]
        n_context = int(g.integers(1, max(2, req.max_objects - len(objects))))
        picks = []
        if things:
            w = weights[things] / weights[things].sum()
            k = min(n_context, len(things))
            picks = [req.train[things[i]] for i in g.choice(len(things), size=k, replace=False, p=w)]
        context = []
        for name in picks:
            for _ in range(30):
                box = sample_box(g, size_class(name) if size_class(name) != "background" else "large")
                if all(_iou(box, p) <= MAX_IOU for p in placed) and _covered(novel_box, box) <= 0.25:
                    placed.append(box)
                    context.append(LayoutObject(category=name, box=box))
                    break
        # Larger objects first, so renderers that paint in order keep small ones visible.
        novel_obj = LayoutObject(category=novel, box=novel_box, is_novel=True)
        things_sorted = sorted([novel_obj, *context], key=lambda o: -o.area)
        objects += things_sorted
        objects = objects[: req.max_objects] if novel_obj in objects[: req.max_objects] else [novel_obj]
        names = [o.category for o in objects if not o.is_novel]
        caption = f"a photo of a {novel}" + (f" with {', '.join(dict.fromkeys(names))}" if names else "")
        return SceneLayout(
            job_id=req.job_id, scene_id=req.scene_id, scene_index=req.scene_index, novel_category=novel,
            caption=caption, objects=objects, seed=req.seed, backend=self.name,
        )
