"""/v1/loops: submission with every check a round's job and training will meet, tenancy, listing, cancel;
and a job's category_budget through POST /v1/jobs."""

from __future__ import annotations

import pytest
from queue_inspection import queued_messages

from dreammask.shared import loops as lp
from dreammask.shared.schemas import JobPlan

TOY = {"name": "toy", "train_categories": ["sky", "grass", "cat", "table"], "target": ["kite", "awning"],
       "rounds": 2, "images_per_round": 4, "real_datasets": ["toy_world_train"], "eval_dataset": "toy_world_val",
       "job": {"image_size": 64}, "training": {"iterations": 3, "tiny": True}}


def test_submit_stores_the_loop_and_queues_its_first_step(api, alice, redis_client):
    r = api.post("/v1/loops", json=TOY, headers=alice)
    assert r.status_code == 202, r.text
    v = r.json()
    assert v["state"] == "queued" and v["round"] == 0 and v["rounds"] == 2 and v["step"] == "start"
    assert r.headers["Location"] == f"http://api.test/v1/loops/{v['loop_id']}"
    stored = lp.read_spec(api.rt.store, v["loop_id"])
    assert stored.tenant == "alice" and stored.spec.target == ["kite", "awning"]
    assert stored.train_categories == ["sky", "grass", "cat", "table"]
    assert queued_messages(redis_client, "loop") == [{"task": "dreammask.loop.advance", "args": [v["loop_id"]],
                                                     "kwargs": {}}]
    assert v["loop_id"] in lp.active_loops(api.rt.store, api.rt.redis)


@pytest.mark.parametrize("patch, loc, mention", [
    ({"target": ["kite", "cat"]}, ["body", "target", 1], "is a training category"),
    ({"target": ["kyte"]}, ["body", "target", 0], "did you mean 'kite'"),
    ({"eval_dataset": "ade20k_panoptic_val"}, ["body", "eval_dataset"], "zero-shot evaluation set"),
    ({"eval_dataset": "synthetic:ds-nope"}, ["body", "eval_dataset"], "no dataset 'ds-nope'"),
    ({"real_datasets": ["coco_val_typo"]}, ["body", "real_datasets", 0], "use a registered dataset"),
    ({"training": {"iterations": 3, "tiny": True, "overrides": {"SOLVER.BASE_LRR": 1.0}}},
     ["body", "training", "overrides", "SOLVER.BASE_LRR"], "did you mean 'SOLVER.BASE_LR'"),
    ({"images_per_round": 101}, ["body", "images_per_round"], "at most 100"),
    ({"job": {"image_size": 64, "backends": {"synthesis": "gligen"}}}, ["body", "job", "backends", "synthesis"],
     "not deployed"),
    ({"weights": "tr-nothere"}, ["body", "weights"], "no training 'tr-nothere' of yours"),
    ({"images_per_round": 1}, ["body"], "each gets at least one image"),
])
def test_bad_loops_are_422_naming_the_field(api, alice, redis_client, patch, loc, mention):
    r = api.post("/v1/loops", json={**TOY, **patch}, headers=alice)
    assert r.status_code == 422, r.text
    assert any(d["loc"] == loc and mention in d["msg"] for d in r.json()["detail"]), r.json()
    assert queued_messages(redis_client, "loop") == []


def test_loops_are_the_tenants_own(api, alice, bob):
    loop_id = api.post("/v1/loops", json=TOY, headers=alice).json()["loop_id"]
    assert api.get(f"/v1/loops/{loop_id}", headers=bob).status_code == 404
    assert api.post(f"/v1/loops/{loop_id}/cancel", headers=bob).status_code == 404
    assert api.get("/v1/loops", headers=bob).json()["total"] == 0
    page = api.get("/v1/loops", headers=alice).json()
    assert page["total"] == 1 and page["items"][0]["loop_id"] == loop_id and page["items"][0]["history"] == []
    assert api.get("/v1/loops/../x", headers=alice).status_code == 404


def test_cancel_a_queued_loop_then_again(api, alice):
    loop_id = api.post("/v1/loops", json=TOY, headers=alice).json()["loop_id"]
    r = api.post(f"/v1/loops/{loop_id}/cancel", headers=alice)
    assert r.status_code == 202 and r.json()["state"] == "cancelled" and r.json()["cancel_requested"]
    assert api.post(f"/v1/loops/{loop_id}/cancel", headers=alice).status_code == 409


def test_a_job_with_a_category_budget(api, alice):
    r = api.post("/v1/jobs", json={"train_categories": ["sky", "cat"], "category_budget": {"kite": 2, "awning": 1},
                                   "image_size": 64}, headers=alice)
    assert r.status_code == 202, r.text
    assert r.json()["planned_scenes"] == 3
    r = api.post("/v1/jobs", json={"train_categories": ["sky", "cat"], "category_budget": {"kite": 2},
                                   "images_per_category": 3}, headers=alice)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "category_budget"]
    r = api.post("/v1/jobs", json={"train_categories": ["sky"], "category_budget": {"kite": 200}}, headers=alice)
    assert r.status_code == 422 and "200 images in all" in r.json()["detail"][0]["msg"]
    assert JobPlan.model_fields["category_budget"].default is None
