"""The closed loop's allocation rule and the budgeted job's plan (shared/loops.py, shared/plan.py)."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError

from dreammask.shared import loops as lp
from dreammask.shared.plan import build_plan
from dreammask.shared.schemas import CategorySet, JobSpec, StoredJobSpec, utcnow
from dreammask.shared.seeding import scene_seed
from dreammask.shared.settings import Settings
from dreammask.shared.submission import job_problems


def test_allocation_follows_the_deficit_with_one_image_each_and_the_exact_budget():
    a = lp.allocate(20, {"kite": 90.0, "awning": 50.0, "lamp": 10.0, "bench": 0.0}, floor=0.05)
    # deficits 0.1, 0.5, 0.9, 1.0 -> weights the same; 16 images after one each, quotas 16 * w / 2.5
    assert a.deficits == pytest.approx({"kite": 0.1, "awning": 0.5, "lamp": 0.9, "bench": 1.0})
    quotas = {"kite": 0.64, "awning": 3.2, "lamp": 5.76, "bench": 6.4}
    # whole parts 0+3+5+6 = 14; the two images left go to the largest remainders: lamp (.76), kite (.64)
    assert a.counts == {"kite": 1 + 0 + 1, "awning": 1 + 3, "lamp": 1 + 5 + 1, "bench": 1 + 6}
    assert sum(a.counts.values()) == 20
    assert list(a.counts) == list(quotas)  # the target's order


def test_floor_keeps_a_solved_class_in_play_and_caps_what_the_weak_take():
    ious = {"kite": 100.0, "awning": 0.0}
    low, high = lp.allocate(22, ious, floor=0.05), lp.allocate(22, ious, floor=0.5)
    assert low.weights == {"kite": 0.05, "awning": 1.0}
    assert low.counts == {"kite": 2, "awning": 20}  # 1 + 20*0.05/1.05 = 1.95 -> 1 + 0, +1 by remainder
    assert high.counts == {"kite": 8, "awning": 14}  # 1 + 20/3 = 7.67 -> 8
    # the floor's guarantee: at least floor(B' * floor / sum w) on top of the one image
    assert low.counts["kite"] >= 1 + math.floor(20 * 0.05 / 1.05)


def test_unmeasured_classes_count_as_zero_and_target_iou_caps_the_deficit():
    a = lp.allocate(6, {"kite": None, "awning": float("nan"), "lamp": 40.0}, target_iou=40.0)
    assert a.deficits == {"kite": 0.4, "awning": 0.4, "lamp": 0.0}
    assert a.weights["lamp"] == lp.DEFAULT_FLOOR
    assert sum(a.counts.values()) == 6 and a.counts["lamp"] == 1


def test_equal_figures_give_the_uniform_split():
    names = ["a", "b", "c"]
    assert lp.allocate(10, dict.fromkeys(names, 30.0)).counts == lp.uniform(10, names) == {"a": 4, "b": 3, "c": 3}


@pytest.mark.parametrize("seed", range(25))
def test_random_figures_always_sum_to_the_budget_and_are_monotone(seed):
    rng = random.Random(seed)
    k = rng.randint(1, 12)
    ious = {f"c{i}": rng.choice([None, rng.uniform(0, 100)]) for i in range(k)}
    budget = rng.randint(k, 300)
    a = lp.allocate(budget, ious, floor=rng.uniform(0.01, 1.0))
    assert sum(a.counts.values()) == budget and min(a.counts.values()) >= 1
    for x in ious:
        for y in ious:
            if a.weights[x] > a.weights[y]:
                assert a.counts[x] >= a.counts[y], (a, x, y)
            # largest remainder: never more than one image away from the exact share
            exact = 1 + (budget - k) * a.weights[x] / sum(a.weights.values())
            assert abs(a.counts[x] - exact) < 1


def test_bad_allocations_are_refused():
    with pytest.raises(ValueError, match="one image"):
        lp.allocate(2, {"a": 0.0, "b": 0.0, "c": 0.0})
    with pytest.raises(ValueError, match="floor"):
        lp.allocate(5, {"a": 0.0}, floor=0.0)


def test_a_budgeted_job_plans_its_categories_in_order_with_their_counts():
    spec = JobSpec(train_categories=["sky", "cat"], category_budget={"kite": 2, "awning": 1}, seed=7)
    stored = StoredJobSpec(job_id="j1", tenant="t", created_at=utcnow(), spec=spec, train_categories=["sky", "cat"])
    cats = CategorySet(job_id="j1", backend="category_budget", train=["sky", "cat"], novel=[])
    plan = build_plan(stored, cats)
    assert plan.category_budget == {"kite": 2, "awning": 1} and plan.images_per_category is None
    assert [s.novel_category for s in plan.scenes] == ["kite", "kite", "awning"]
    assert [s.seed for s in plan.scenes] == [scene_seed(7, i) for i in range(3)]
    assert spec.num_scenes == 3 and spec.novel_asked == 2


def test_category_budget_is_checked_like_user_input():
    base = {"train_categories": ["sky", "cat"]}
    for bad, msg in (({}, "at least one"), ({"kite": 0}, "integer from 1"), ({"Kite": 1, "kite": 2}, "duplicates"),
                     ({"cat": 1}, "training category"), ({"k\u0000": 1}, "control")):
        with pytest.raises(ValidationError, match=msg):
            JobSpec(**base, category_budget=bad)
    s = Settings(max_novel_categories=2, max_scenes_per_job=5)
    _, _, problems = job_problems(JobSpec(**base, category_budget={"a": 3, "b": 3, "c": 1}), s)
    assert {loc for loc, _ in problems} == {("category_budget",)}
    assert any("7 images" in m for _, m in problems) and any("3 categories" in m for _, m in problems)
    _, _, problems = job_problems(JobSpec(**base, category_budget={"a": 1}, num_novel=3), Settings())
    assert problems == [(("category_budget",), "give category_budget or num_novel, not both: the budget names the "
                                                "categories and their image counts")]
    _, _, problems = job_problems(JobSpec(preset="coco_panoptic", category_budget={"dog": 1}), Settings())
    assert problems and problems[0][0] == ("category_budget", "dog")


def test_loop_spec_checks():
    ok = {"train_categories": ["sky"], "target": ["kite", "awning"], "rounds": 2, "images_per_round": 4,
          "real_datasets": ["toy_world_train"], "eval_dataset": "toy_world_val", "training": {"iterations": 5}}
    lp.LoopSpec(**ok)
    for over, msg in (({"images_per_round": 1}, "below the 2 target"), ({"target": ["kite", "Kite"]}, "duplicates"),
                      ({"real_datasets": []}, "give weights"), ({"preset": "coco_panoptic"}, "not both"),
                      ({"floor": 0}, "greater than 0"), ({"rounds": 0}, "greater than or equal to 1")):
        with pytest.raises(ValidationError, match=msg):
            lp.LoopSpec(**{**ok, **over})


def test_round_requests():
    spec = lp.LoopSpec(name="L", train_categories=["sky"], target=["kite"], rounds=2, images_per_round=3,
                       real_datasets=["toy_world_train"], eval_dataset="toy_world_val",
                       job={"image_size": 64, "seed": 9}, training={"iterations": 5, "base_iterations": 7, "tiny": True})
    stored = lp.StoredLoopSpec(loop_id="lp1", tenant="t", created_at=utcnow(), spec=spec, train_categories=["sky"])
    r0 = lp.training_request(stored, 0, [], None)
    r2 = lp.training_request(stored, 2, ["ds-a", "ds-b"], "tr-x")
    assert (r0["iterations"], r0["weights"], r0["datasets"]) == (7, None, [])
    assert (r2["iterations"], r2["weights"], r2["datasets"], r2["eval_datasets"]) == (5, "tr-x", ["ds-a", "ds-b"],
                                                                                       ["toy_world_val"])
    job = lp.job_spec(stored, 2, {"kite": 3})
    assert job.category_budget == {"kite": 3} and job.seed == 11 and job.image_size == 64
    assert job.train_categories == ["sky"] and job.name == "L round 2"
