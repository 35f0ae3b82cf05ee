"""The job's plan: laid out once from the spec and the categories association found; one meaning per seed."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from dreammask.shared import keys
from dreammask.shared.chain import DEFAULT_CHAIN
from dreammask.shared.plan import build_plan, scene_stage_seed
from dreammask.shared.schemas import CategorySet, JobSpec, NovelCategory, StoredJobSpec
from dreammask.shared.seeding import SALTS, scene_seed, stage_seed
from dreammask.shared.settings import Settings


def _stored(**spec) -> StoredJobSpec:
    s = JobSpec(**{"train_categories": ["dog", "car"], "num_novel": 3, "images_per_category": 2, "seed": 9, **spec})
    return StoredJobSpec(job_id="j1", tenant="t", created_at=datetime.now(timezone.utc), spec=s,
                         train_categories=["dog", "car"], limits=Settings(max_image_size=640).job_limits())


def _cats(*names) -> CategorySet:
    return CategorySet(job_id="j1", backend="t", train=["dog", "car"],
                       novel=[NovelCategory(name=n, nearest_train="dog", score=0.5) for n in names])


def test_scenes_follow_the_categories_found_not_those_asked():
    plan = build_plan(_stored(), _cats("leash", "kennel"))  # 3 asked, 2 found
    assert plan.scene_ids == [keys.scene_id(i) for i in range(4)]
    assert [sc.novel_category for sc in plan.scenes] == ["leash", "leash", "kennel", "kennel"]
    assert [sc.seed for sc in plan.scenes] == [scene_seed(9, i) for i in range(4)]
    assert plan.job_seed == 9 and plan.limits.max_image_size == 640  # the limits the job was checked against


def test_stage_seeds_derive_from_the_scene_seed_with_the_declared_salt():
    plan = build_plan(_stored(), _cats("leash"))
    sid = plan.scene_ids[1]
    layout = scene_stage_seed(DEFAULT_CHAIN, plan, sid, "layout")
    render = scene_stage_seed(DEFAULT_CHAIN, plan, sid, "synthesis")
    assert layout == stage_seed(plan.scene(sid).seed, SALTS["layout"]) and layout != render
    # Another job seed moves every seed; the same one gives the same plan.
    assert build_plan(_stored(seed=10), _cats("leash")).scenes[1].seed != plan.scenes[1].seed
    assert build_plan(_stored(), _cats("leash")).scenes == plan.scenes
    with pytest.raises(ValueError, match="declares no seed_salt"):
        scene_stage_seed(DEFAULT_CHAIN, plan, sid, "annotation")
    with pytest.raises(KeyError, match="not in the plan"):
        plan.scene("s99999")


def test_limits_name_the_setting_and_a_render_override_is_checked_the_same_way():
    limits = Settings(max_synthesis_steps=50, max_guidance_scale=10, max_image_size=512).job_limits()
    spec = JobSpec(train_categories=["dog"], synthesis={"steps": 60, "guidance_scale": 12}, image_size=1024)
    found = dict(limits.violations(spec, ["dog"]))
    assert "DREAMMASK_MAX_SYNTHESIS_STEPS" in found[("synthesis", "steps")]
    assert "DREAMMASK_MAX_GUIDANCE_SCALE" in found[("synthesis", "guidance_scale")]
    assert "DREAMMASK_MAX_IMAGE_SIZE" in found[("image_size",)]
    assert limits.render_violations(spec.synthesis.model_copy(update={"steps": 40, "guidance_scale": 5}), 512) == []
