"""Association stage: CNA once per job, which decides the job's scenes and writes its plan (shared/plan.py),
then layouts for batches of scenes.
Only the work is here; the skeleton (`shared/skeleton.py`) skips, records and forwards along the chain."""

from __future__ import annotations

import time

from dreammask.shared import keys
from dreammask.shared.backends import Failure, LayoutRequest
from dreammask.shared.plan import scene_stage_seed, write_plan
from dreammask.shared.registry import backend_class, get_backend
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import CategorySet, JobState, NovelCategory, SceneLayout, StoredJobSpec
from dreammask.shared.skeleton import JobResult, SceneResult

from .pipeline import CategoryAssociationPipeline, LayoutPipeline


def associate_work(rt: Runtime, job_id: str) -> JobResult:
    tr = rt.tracker
    stored = tr.spec(job_id)
    spec = stored.spec
    tr.transition(job_id, JobState.running)

    cats = rt.store.try_get_model(keys.categories(job_id), CategorySet)
    if cats is None and stored.rerender_of is not None:
        cats = _rerender_setup(rt, stored)
    elif cats is None and spec.category_budget is not None:
        # The categories were chosen by the client (the closed loop's allocation): nothing to propose.
        cats = CategorySet(job_id=job_id, backend="category_budget", train=stored.train_categories, novel=[
            NovelCategory(name=name, nearest_train="", score=0.0, source="category_budget",
                          reason=f"{count} images asked in the job's category_budget")
            for name, count in spec.category_budget.items()])
        rt.store.put_json(keys.categories(job_id), cats)
    if cats is None:
        backend = get_backend("association", spec.backends.association, rt.settings)
        t0 = time.perf_counter()
        novel, dropped = CategoryAssociationPipeline(backend)(stored.train_categories, spec.num_novel, seed=spec.seed)
        tr.add_seconds(job_id, "association", time.perf_counter() - t0)
        if not novel:
            tr.transition(job_id, JobState.failed,
                          f"association backend {backend.name!r} proposed no usable novel category "
                          f"({len(dropped)} dropped)")
            return JobResult(proceed=False, info={"novel": 0})
        cats = CategorySet(job_id=job_id, backend=backend.name, train=stored.train_categories, novel=novel,
                           dropped=dropped[:5000])
        rt.store.put_json(keys.categories(job_id), cats)

    # The plan is the stage's output, written last (its existence marks the association done).
    plan = tr.plan(job_id, required=False) or write_plan(rt.store, stored, cats, rt.settings.job_limits())
    n_scenes = len(plan.scenes)
    if n_scenes != tr.status(job_id).planned_scenes:
        tr.transition(job_id, JobState.running, f"{len(cats.novel)} novel categories found, "
                      f"{spec.num_novel} asked: planning {n_scenes} scenes", planned_scenes=n_scenes)
    return JobResult(scenes=plan.scene_ids,
                     batch_size=backend_class("layout", spec.backends.layout).preferred_batch_size,
                     info={"novel": len(cats.novel), "scenes": n_scenes})


def _rerender_setup(rt: Runtime, stored: StoredJobSpec) -> CategorySet:
    """A re-render job takes its origin's categories and the origin scene's layout as they are; its layout
    stage then finds the layout written and passes the scene on to synthesis."""
    o, job_id = stored.rerender_of, stored.job_id
    layout = rt.store.get_model(keys.layout(o.job_id, o.scene_id), SceneLayout)
    sid = keys.scene_id(0)
    rt.store.put_json(keys.layout(job_id, sid), layout.model_copy(update={"job_id": job_id, "scene_id": sid,
                                                                           "scene_index": 0}))
    cats = rt.store.get_model(keys.categories(o.job_id), CategorySet).model_copy(update={"job_id": job_id})
    rt.store.put_json(keys.categories(job_id), cats)
    return cats


def plan_layouts_work(rt: Runtime, job_id: str, todo: list[str]) -> SceneResult:
    spec = rt.tracker.spec(job_id).spec
    plan = rt.tracker.plan(job_id)
    cats = rt.store.get_model(keys.categories(job_id), CategorySet)
    novel_by_name = {n.name: n for n in cats.novel}
    novel_names = list(novel_by_name)
    backend = get_backend("layout", spec.backends.layout, rt.settings)
    requests = []
    for sid in todo:
        requests.append(LayoutRequest(
            job_id=job_id, scene_id=sid, scene_index=keys.scene_index(sid),
            novel=novel_by_name[plan.scene(sid).novel_category], train=cats.train, novel_names=novel_names,
            seed=scene_stage_seed(rt.chain, plan, sid, "layout"), job_seed=plan.job_seed,
            max_objects=spec.max_objects_per_scene, image_size=spec.image_size,
        ))
    result = SceneResult()
    for sid, res in zip(todo, LayoutPipeline(backend)(requests)):
        if isinstance(res, Failure):
            result.fail(sid, res.reason)
            continue
        rt.store.put_json(keys.layout(job_id, sid), res)
        result.done.append(sid)
    return result


def load_layout(rt: Runtime, job_id: str, sid: str) -> SceneLayout:
    return rt.store.get_model(keys.layout(job_id, sid), SceneLayout)
