"""A job's plan (`JobPlan` in shared/schemas.py), built once by the association stage and read by every later
stage: which scenes the job makes, each scene's novel category and seed, the limits in force.

This is the one place the scenes are laid out: scene *i* shows novel category *i // images_per_category*
(of the categories association found, which may be fewer than asked) with scene seed
`scene_seed(job seed, i)`; a job with a `category_budget` renders its categories in the budget's order, each
as many times as the budget says. A stage's seed for a scene is `stage_seed(scene seed, that stage's salt)`,
unless the plan pins it (`PlannedScene.stage_seeds`: a re-render renders with its origin's render seed).
"""

from __future__ import annotations

from . import keys
from .chain import Chain
from .schemas import CategorySet, JobLimits, JobPlan, PlannedScene, SceneRef, StoredJobSpec
from .seeding import scene_seed, stage_seed
from .storage import ObjectStore


class PlanMissing(LookupError):
    pass


def build_plan(stored: StoredJobSpec, categories: CategorySet, limits: JobLimits | None = None) -> JobPlan:
    """The plan of a job whose novel categories are decided. `limits`: the deployment's, used only when the
    stored spec does not record those it was checked against (jobs stored before they were recorded)."""
    spec = stored.spec
    limits = stored.limits or limits
    if stored.rerender_of is not None:
        raise ValueError(f"job {stored.job_id} is a re-render: its plan comes from its origin's (rerender_plan)")
    if spec.category_budget is not None:
        names = [n for n, count in spec.category_budget.items() for _ in range(count)]
        return JobPlan(job_id=stored.job_id, job_seed=spec.seed, category_budget=dict(spec.category_budget),
                       scenes=[PlannedScene(scene_id=keys.scene_id(i), novel_category=name,
                                            seed=scene_seed(spec.seed, i)) for i, name in enumerate(names)],
                       limits=limits)
    per = spec.images_per_category
    scenes = [
        PlannedScene(scene_id=keys.scene_id(i), novel_category=categories.novel[i // per].name,
                     seed=scene_seed(spec.seed, i))
        for i in range(len(categories.novel) * per)
    ]
    return JobPlan(job_id=stored.job_id, job_seed=spec.seed, images_per_category=per, scenes=scenes,
                   limits=limits)


def rerender_plan(store: ObjectStore, stored: StoredJobSpec) -> JobPlan:
    """The plan of a re-render job: one scene, `s00000`, showing its origin's category with its origin's scene
    seed and the render seed recorded in the job (the origin's, unless the request gave one)."""
    o = stored.rerender_of
    origin = store.get_model(keys.plan(o.job_id), JobPlan).scene(o.scene_id)
    scene = PlannedScene(scene_id=keys.scene_id(0), novel_category=origin.novel_category, seed=origin.seed,
                         stage_seeds={"synthesis": o.render_seed},
                         origin=SceneRef(job_id=o.job_id, scene_id=o.scene_id))
    return JobPlan(job_id=stored.job_id, job_seed=stored.spec.seed, scenes=[scene], limits=stored.limits)


def write_plan(store: ObjectStore, stored: StoredJobSpec, categories: CategorySet,
               limits: JobLimits | None = None) -> JobPlan:
    """Build the job's plan and store it (`jobs/{job}/plan.json`): what the association stage does once its
    categories are decided (and what tests and benchmarks do for jobs they set up by hand)."""
    plan = rerender_plan(store, stored) if stored.rerender_of is not None else build_plan(stored, categories, limits)
    store.put_json(keys.plan(stored.job_id), plan)
    return plan


def scene_stage_seed(chain: Chain, plan: JobPlan, scene_id: str, stage: str) -> int:
    """The seed `stage` draws with for one scene of the plan (the stage must declare a `seed_salt`): pinned in
    the plan, else derived from the scene seed."""
    scene = plan.scene(scene_id)
    if stage in scene.stage_seeds:
        return scene.stage_seeds[stage]
    return stage_seed(scene.seed, chain.seed_salt(stage))
