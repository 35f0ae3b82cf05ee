"""Association stage: CNA once per job, then layouts for batches of scenes; forwards to synthesis."""

from __future__ import annotations

import time

from dreammask.shared import keys
from dreammask.shared.backends import Failure, LayoutRequest
from dreammask.shared.celery_app import TASK_CURATE, TASK_PLAN_LAYOUTS, TASK_RENDER
from dreammask.shared.registry import backend_class, get_backend
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import CategorySet, JobState, SceneLayout

from .pipeline import CategoryAssociationPipeline, LayoutPipeline


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def associate(rt: Runtime, job_id: str) -> dict:
    tr = rt.tracker
    if tr.is_cancelled(job_id):
        return {"skipped": "cancelled"}
    stored = tr.spec(job_id)
    spec = stored.spec
    tr.transition(job_id, JobState.running)

    cats = rt.store.try_get_model(keys.categories(job_id), CategorySet)
    if cats is None:
        backend = get_backend("association", spec.backends.association, rt.settings)
        t0 = time.perf_counter()
        novel, dropped = CategoryAssociationPipeline(backend)(stored.train_categories, spec.num_novel, seed=spec.seed)
        tr.add_seconds(job_id, "association", time.perf_counter() - t0)
        if not novel:
            tr.transition(job_id, JobState.failed,
                          f"association backend {backend.name!r} proposed no usable novel category "
                          f"({len(dropped)} dropped)")
            return {"novel": 0}
        cats = CategorySet(job_id=job_id, backend=backend.name, train=stored.train_categories, novel=novel,
                           dropped=dropped[:5000])
        rt.store.put_json(keys.categories(job_id), cats)

    n_scenes = len(cats.novel) * spec.images_per_category
    if n_scenes != tr.status(job_id).planned_scenes:
        tr.transition(job_id, JobState.running, f"{len(cats.novel)} novel categories found, "
                      f"{spec.num_novel} asked: planning {n_scenes} scenes", planned_scenes=n_scenes)
    scene_ids = [keys.scene_id(i) for i in range(n_scenes)]
    size = max(rt.settings.layout_batch_size, backend_class("layout", spec.backends.layout).preferred_batch_size)
    for batch in batches(scene_ids, size):
        rt.dispatcher.send(TASK_PLAN_LAYOUTS, job_id, batch)
    return {"novel": len(cats.novel), "scenes": n_scenes}


def plan_layouts(rt: Runtime, job_id: str, scene_ids: list[str]) -> dict:
    tr = rt.tracker
    if tr.is_cancelled(job_id):
        return {"skipped": "cancelled"}
    stored = tr.spec(job_id)
    spec = stored.spec
    cats = rt.store.get_model(keys.categories(job_id), CategorySet)
    novel_names = [n.name for n in cats.novel]

    todo, ready = tr.split_done(job_id, "layout", scene_ids)
    failed_last = False
    if todo:
        backend = get_backend("layout", spec.backends.layout, rt.settings)
        requests = []
        for sid in todo:
            idx = keys.scene_index(sid)
            requests.append(LayoutRequest(
                job_id=job_id, scene_id=sid, scene_index=idx, novel=cats.novel[idx // spec.images_per_category],
                train=cats.train, novel_names=novel_names, seed=spec.seed,
                max_objects=spec.max_objects_per_scene, image_size=spec.image_size,
            ))
        t0 = time.perf_counter()
        results = LayoutPipeline(backend)(requests)
        done = []
        for sid, res in zip(todo, results):
            if isinstance(res, Failure):
                failed_last = tr.mark_failed(job_id, "layout", sid, res.reason) or failed_last
                continue
            rt.store.put_json(keys.layout(job_id, sid), res)
            done.append(sid)
        tr.mark_done(job_id, "layout", done, time.perf_counter() - t0)
        ready += done
    if failed_last:
        rt.dispatcher.send(TASK_CURATE, job_id)
    ready.sort()
    for batch in batches(ready, rt.settings.synthesis_batch_size):
        rt.dispatcher.send(TASK_RENDER, job_id, batch)
    return {"planned": len(ready)}


def load_layout(rt: Runtime, job_id: str, sid: str) -> SceneLayout:
    return rt.store.get_model(keys.layout(job_id, sid), SceneLayout)
