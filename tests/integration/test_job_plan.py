"""The plan is written once, at association, and every later stage reads it: a job run from a plan written
beforehand makes exactly the plan's scenes, with the plan's categories and seeds. The seeds reach the dataset's
manifest and card, and a render's provenance is enough to render the image again."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from dreammask.shared import keys
from dreammask.shared import orchestration as orch
from dreammask.shared.plan import scene_stage_seed
from dreammask.shared.registry import get_backend
from dreammask.shared.schemas import (
    CategorySet,
    DatasetManifest,
    JobPlan,
    JobState,
    NovelCategory,
    PlannedScene,
    RenderRecord,
    SceneLayout,
)


def test_every_stage_reads_the_plan(inproc):
    rt = inproc.rt
    job = inproc.create(num_novel=2, images_per_category=2, seed=4)
    cats = CategorySet(job_id=job, backend="hand", train=["person", "dog", "car", "building", "sky", "road"],
                       novel=[NovelCategory(name="awning", nearest_train="building", score=0.5),
                              NovelCategory(name="puppy", nearest_train="dog", score=0.5)])
    rt.store.put_json(keys.categories(job), cats)
    # Not what the spec would give: three scenes, the second category first, seeds of our choosing.
    plan = JobPlan(job_id=job, job_seed=4, images_per_category=2, scenes=[
        PlannedScene(scene_id="s00000", novel_category="puppy", seed=111),
        PlannedScene(scene_id="s00001", novel_category="puppy", seed=222),
        PlannedScene(scene_id="s00002", novel_category="awning", seed=333)])
    rt.store.put_json(keys.plan(job), plan)
    orch.start(rt, job)
    inproc.run()

    st = rt.tracker.status(job)
    assert st.state == JobState.succeeded and st.planned_scenes == 3, st
    assert rt.store.get_model(keys.plan(job), JobPlan) == plan  # written once: the stage kept it
    for planned in plan.scenes:
        sid = planned.scene_id
        layout = rt.store.get_model(keys.layout(job, sid), SceneLayout)
        assert layout.novel_category == planned.novel_category
        assert layout.seed == scene_stage_seed(rt.chain, plan, sid, "layout")
        record = rt.store.get_model(keys.render_record(job, sid), RenderRecord)
        assert record.seed == scene_stage_seed(rt.chain, plan, sid, "synthesis") != layout.seed
    assert not rt.store.exists(keys.layout(job, "s00003"))

    manifest = rt.store.get_model(keys.dataset_manifest_for_job(job), DatasetManifest)
    assert manifest.job_seed == 4 and manifest.scene_seeds
    assert manifest.scene_seeds == {sc.scene_id: sc.seed for sc in plan.scenes if sc.scene_id in manifest.scene_seeds}
    card = rt.store.get_json(keys.dataset_file(manifest.dataset_id, keys.CARD_JSON))
    assert card["job_seed"] == 4
    assert "job seed 4" in rt.store.get_bytes(keys.dataset_file(manifest.dataset_id, keys.CARD_MD)).decode()


def test_a_render_record_is_enough_to_render_the_image_again(inproc):
    rt = inproc.rt
    job = inproc.create(num_novel=1, images_per_category=2)
    orch.start(rt, job)
    inproc.run()
    for sid in ("s00000", "s00001"):
        record = rt.store.get_model(keys.render_record(job, sid), RenderRecord)
        layout = rt.store.get_model(record.layout_key, SceneLayout)
        again = get_backend("synthesis", record.backend).render([layout], [record.seed], record.synthesis,
                                                                 record.width)[0]
        stored = Image.open(io.BytesIO(rt.store.get_bytes(record.image_key))).convert("RGB")
        assert np.array_equal(np.asarray(again.image), np.asarray(stored))
        assert "seed" not in record.params  # one place for the render seed
