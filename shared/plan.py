"""A job's plan (`JobPlan` in shared/schemas.py), built once by the association stage and read by every later
stage: which scenes the job makes, each scene's novel category and seed, the limits in force.

This is the one place the scenes are laid out: scene *i* shows novel category *i // images_per_category*
(of the categories association found, which may be fewer than asked) with scene seed
`scene_seed(job seed, i)`. A stage's seed for a scene is `stage_seed(scene seed, that stage's salt)`.
"""

from __future__ import annotations

from . import keys
from .chain import Chain
from .schemas import CategorySet, JobLimits, JobPlan, PlannedScene, StoredJobSpec
from .seeding import scene_seed, stage_seed
from .storage import ObjectStore


class PlanMissing(LookupError):
    pass


def build_plan(stored: StoredJobSpec, categories: CategorySet, limits: JobLimits | None = None) -> JobPlan:
    """The plan of a job whose novel categories are decided. `limits`: the deployment's, used only when the
    stored spec does not record those it was checked against (jobs stored before they were recorded)."""
    spec = stored.spec
    per = spec.images_per_category
    scenes = [
        PlannedScene(scene_id=keys.scene_id(i), novel_category=categories.novel[i // per].name,
                     seed=scene_seed(spec.seed, i))
        for i in range(len(categories.novel) * per)
    ]
    return JobPlan(job_id=stored.job_id, job_seed=spec.seed, images_per_category=per, scenes=scenes,
                   limits=stored.limits or limits)


def write_plan(store: ObjectStore, stored: StoredJobSpec, categories: CategorySet,
               limits: JobLimits | None = None) -> JobPlan:
    """Build the job's plan and store it (`jobs/{job}/plan.json`): what the association stage does once its
    categories are decided (and what tests and benchmarks do for jobs they set up by hand)."""
    plan = build_plan(stored, categories, limits)
    store.put_json(keys.plan(stored.job_id), plan)
    return plan


def scene_stage_seed(chain: Chain, plan: JobPlan, scene_id: str, stage: str) -> int:
    """The seed `stage` draws with for one scene of the plan (the stage must declare a `seed_salt`)."""
    return stage_seed(plan.scene(scene_id).seed, chain.seed_salt(stage))
