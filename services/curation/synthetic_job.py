"""Curation inputs without the GPU stages: a job whose categories, layouts, images and annotations are small
synthetic objects written straight to storage. The curation benchmark (bench/curation.py) and the curation
tests use it to run the curation steps at any job size in seconds per thousand scenes."""

from __future__ import annotations

import numpy as np

from dreammask.shared import keys
from dreammask.shared.masks import encode_rle, png_bytes
from dreammask.shared.plan import scene_stage_seed, write_plan
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import (
    CategorySet,
    InstanceAnnotation,
    JobSpec,
    JobState,
    LayoutObject,
    NovelCategory,
    SceneAnnotation,
    SceneLayout,
)

DEFAULT_TRAIN = ["person", "dog", "car", "building", "sky", "road"]
DEFAULT_NOVEL = [("awning", "building", None), ("puppy", "dog", True), ("forest", "road", None),
                 ("stairway", "road", False)]


def _ellipse(h: int, w: int, box: list[float]) -> np.ndarray:
    x0, y0, x1, y1 = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max(1.0, (x1 - x0) / 2), max(1.0, (y1 - y0) / 2)
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def make_job(rt: Runtime, n_scenes: int, *, image_size: int = 64, preset: str | None = None,
             train: list[str] | None = None, novel=None, exports: list[str] | None = None,
             seed: int = 0) -> str:
    """Create a job with `n_scenes` annotated scenes (each: one novel instance, one or two training ones;
    about one scene in five scores too low and is dropped by the default thresholds)."""
    novel = novel or DEFAULT_NOVEL
    per_cat = max(1, -(-n_scenes // len(novel)))
    spec_kw = {"preset": preset} if preset else {"train_categories": train or DEFAULT_TRAIN}
    spec = JobSpec(**spec_kw, num_novel=len(novel), images_per_category=per_cat, image_size=image_size,
                   exports=exports, seed=seed)
    if preset:
        from dreammask.shared.vocabulary import PRESETS

        train_names = PRESETS[preset]()
    else:
        train_names = spec.train_categories
    stored = rt.tracker.create(spec, "bench", train_names, limits=rt.settings.job_limits())
    job = stored.job_id
    cats = CategorySet(job_id=job, backend="synthetic", train=train_names, novel=[
        NovelCategory(name=n, nearest_train=t, score=0.5, source="synthetic", isthing=th) for n, t, th in novel])
    rt.store.put_json(keys.categories(job), cats)
    plan = write_plan(rt.store, stored, cats)  # as the association stage does
    rng = np.random.default_rng(seed)
    h = w = image_size
    for i, planned in enumerate(plan.scenes):
        sid, nov = planned.scene_id, planned.novel_category
        others = [train_names[int(k)] for k in rng.choice(len(train_names), size=int(rng.integers(1, 3)), replace=False)]
        objs = [LayoutObject(category=nov, box=[0.1, 0.15, 0.6, 0.75], is_novel=True)]
        for j, name in enumerate(others):
            x0 = 0.45 + 0.2 * j
            objs.append(LayoutObject(category=name, box=[x0, 0.3, min(1.0, x0 + 0.35), 0.9]))
        layout = SceneLayout(job_id=job, scene_id=sid, scene_index=i, novel_category=nov,
                             caption=f"a photo with a {nov}", objects=objs,
                             seed=scene_stage_seed(rt.chain, plan, sid, "layout"), backend="synthetic")
        rt.store.put_json(keys.layout(job, sid), layout)
        img = np.full((h, w, 3), 40 + (i * 37) % 180, np.uint8)
        insts = []
        low = i % 5 == 4  # this scene's novel instance scores below the default min_score
        for k, o in enumerate(objs):
            m = _ellipse(h, w, o.box)
            img[m] = (np.array([200, 90, 60]) + 30 * k) % 255
            score = 0.1 if (low and o.is_novel) else float(0.5 + 0.4 * rng.random())
            insts.append(InstanceAnnotation(
                instance_id=k, category=o.category, is_novel=o.is_novel,
                bbox=[o.box[0] * w, o.box[1] * h, o.box[2] * w, o.box[3] * h], mask=encode_rle(m),
                area=int(m.sum()), scores={"quality": score}))
        rt.store.put_bytes(keys.image(job, sid), png_bytes(img), "image/png")
        rt.store.put_json(keys.annotation(job, sid), SceneAnnotation(
            job_id=job, scene_id=sid, image_key=keys.image(job, sid), width=w, height=h, mask_backend="synthetic",
            score_backend="synthetic", instances=insts))
    rt.tracker.transition(job, JobState.running, planned_scenes=len(plan.scenes))
    return job


def curation_messages(rt: Runtime, job_id: str) -> None:
    """Send the curation step's batches for every scene of the job's plan, as the annotation step would when
    its scenes land."""
    chain = rt.chain
    st = chain["curation"]
    ids = rt.tracker.plan(job_id).scene_ids
    # The earlier per-scene stages' counters, as their tasks would have left them.
    for prev in chain.scene_stages[: chain.scene_stages.index(st)]:
        rt.tracker.mark_done(job_id, prev.name, ids)
    size = chain.batch_size("curation", rt.settings)
    for i in range(0, len(ids), size):
        rt.dispatcher.send(st.task, job_id, ids[i : i + size])
