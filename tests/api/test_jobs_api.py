from __future__ import annotations

import pytest
from queue_inspection import queued_messages

from dreammask.shared import keys
from dreammask.shared.schemas import JobState

SPEC = {"train_categories": ["person", "dog", "car"], "num_novel": 2, "images_per_category": 2, "image_size": 128}


def test_no_key_or_wrong_key_is_401(api):
    assert api.post("/v1/jobs", json=SPEC).status_code == 401
    r = api.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_submit_stores_the_job_and_queues_ids_only(api, alice, redis_client):
    r = api.post("/v1/jobs", json=SPEC, headers=alice)
    assert r.status_code == 202, r.text
    body = r.json()
    job_id = body["job_id"]
    assert r.headers["location"] == body["url"] == f"http://api.test/v1/jobs/{job_id}"
    assert body["state"] == "queued" and body["planned_scenes"] == 4
    store = api.rt.store
    assert store.exists(keys.spec(job_id)) and store.exists(keys.status(job_id))
    # Claim check: the message carries the job id and nothing else.
    msgs = queued_messages(redis_client, "association")
    assert msgs == [{"task": "dreammask.association.associate", "args": [job_id], "kwargs": {}}]


def test_preset_resolves_coco_panoptic(api, alice):
    r = api.post("/v1/jobs", json={"preset": "coco_panoptic", "num_novel": 1, "images_per_category": 1}, headers=alice)
    assert r.status_code == 202
    spec = api.rt.tracker.spec(r.json()["job_id"])
    assert len(spec.train_categories) == 133 and spec.train_categories[0] == "person"


@pytest.mark.parametrize("patch, loc, mention", [
    ({"train_categories": []}, ["body", "train_categories"], ""),
    ({"train_categories": ["dog", "DOG"]}, ["body", "train_categories"], ""),
    ({"train_categories": ["dog\x07"]}, ["body", "train_categories"], ""),
    ({"image_size": 10**6}, ["body", "image_size"], ""),
    ({"image_size": 100}, ["body", "image_size"], "multiple of 8"),
    # The deployment's limits, checked once here (the tests' settings: at most 100 scenes per job).
    ({"image_size": 2048}, ["body", "image_size"], "DREAMMASK_MAX_IMAGE_SIZE"),
    ({"num_novel": 50, "images_per_category": 50}, ["body"], "DREAMMASK_MAX_SCENES_PER_JOB"),
    ({"num_novel": 600, "images_per_category": 1}, ["body", "num_novel"], "DREAMMASK_MAX_NOVEL_CATEGORIES"),
    ({"synthesis": {"steps": 150}}, ["body", "synthesis", "steps"], "DREAMMASK_MAX_SYNTHESIS_STEPS"),
    ({"synthesis": {"guidance_scale": 25.0}}, ["body", "synthesis", "guidance_scale"],
     "DREAMMASK_MAX_GUIDANCE_SCALE"),
    ({"backends": {"synthesis": "gligen"}}, ["body", "backends", "synthesis"], "not deployed"),
])
def test_bad_specs_are_422_naming_the_field(api, alice, redis_client, patch, loc, mention):
    r = api.post("/v1/jobs", json={**SPEC, **patch}, headers=alice)
    assert r.status_code == 422, r.text
    details = r.json()["detail"]
    assert any(d["loc"] == loc and mention in d["msg"] for d in details), details
    assert all(d["msg"] for d in details)
    # Nothing was stored or queued for a rejected spec.
    assert list(api.rt.store.list("jobs/")) == []
    assert redis_client.llen("association") == 0


def test_a_job_over_the_scene_limit_names_both_fields_not_one(api, alice):
    r = api.post("/v1/jobs", json={**SPEC, "num_novel": 101, "images_per_category": 1}, headers=alice)
    scenes = [d for d in r.json()["detail"] if "DREAMMASK_MAX_SCENES_PER_JOB" in d["msg"]]
    assert len(scenes) == 1 and scenes[0]["loc"] == ["body"]
    assert "num_novel × images_per_category = 101 × 1 = 101 scenes" in scenes[0]["msg"]


def test_the_limits_checked_are_stored_with_the_job(api, alice, api_settings):
    job_id = api.post("/v1/jobs", json=SPEC, headers=alice).json()["job_id"]
    assert api.rt.tracker.spec(job_id).limits == api_settings.job_limits()


def test_undeployed_backend_message_lists_choices(api, alice):
    r = api.post("/v1/jobs", json={**SPEC, "backends": {"masks": "sam"}}, headers=alice)
    assert "not deployed" in r.json()["detail"][0]["msg"] and "grabcut" in r.json()["detail"][0]["msg"]


def test_jobs_are_invisible_to_other_tenants(api, alice, bob):
    job_id = api.post("/v1/jobs", json=SPEC, headers=alice).json()["job_id"]
    assert api.get(f"/v1/jobs/{job_id}", headers=alice).status_code == 200
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/scenes", f"/v1/jobs/{job_id}/categories"):
        assert api.get(path, headers=bob).status_code == 404
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=bob).status_code == 404
    assert api.get("/v1/jobs", headers=bob).json()["total"] == 0
    assert api.get("/v1/jobs/does-not-exist", headers=alice).status_code == 404


def test_list_paginates_and_filters_by_status(api, alice):
    ids = [api.post("/v1/jobs", json=SPEC, headers=alice).json()["job_id"] for _ in range(3)]
    api.post(f"/v1/jobs/{ids[0]}/cancel", headers=alice)
    page = api.get("/v1/jobs", params={"limit": 2}, headers=alice).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    page2 = api.get("/v1/jobs", params={"limit": 2, "offset": 2}, headers=alice).json()
    assert len(page2["items"]) == 1
    seen = {j["job_id"] for j in page["items"] + page2["items"]}
    assert seen == set(ids)
    cancelled = api.get("/v1/jobs", params={"status": "cancelled"}, headers=alice).json()
    assert [j["job_id"] for j in cancelled["items"]] == [ids[0]]
    assert api.get("/v1/jobs", params={"status": "bogus"}, headers=alice).status_code == 422


def test_cancel_and_resume(api, alice, redis_client):
    job_id = api.post("/v1/jobs", json=SPEC, headers=alice).json()["job_id"]
    r = api.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    assert r.status_code == 202 and r.json()["state"] == "cancelled"
    assert api.rt.tracker.is_cancelled(job_id)
    redis_client.delete("association")
    r = api.post(f"/v1/jobs/{job_id}/resume", headers=alice)
    assert r.status_code == 202
    assert r.json()["job"]["state"] == "running" and not api.rt.tracker.is_cancelled(job_id)
    # Nothing was produced yet, so resume starts again at association.
    assert [m["task"] for m in queued_messages(redis_client, "association")] == ["dreammask.association.associate"]


def test_cancel_or_resume_a_finished_job_is_409(api, alice):
    job_id = api.post("/v1/jobs", json=SPEC, headers=alice).json()["job_id"]
    api.rt.tracker.transition(job_id, JobState.succeeded)
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=alice).status_code == 409
    assert api.post(f"/v1/jobs/{job_id}/resume", headers=alice).status_code == 409


def test_job_view_reports_stage_counts(api, alice):
    job_id = api.post("/v1/jobs", json=SPEC, headers=alice).json()["job_id"]
    api.rt.tracker.mark_done(job_id, "layout", ["s00000", "s00001"], 0.5)
    api.rt.tracker.mark_failed(job_id, "synthesis", "s00001", "renderer exploded")
    view = api.get(f"/v1/jobs/{job_id}", headers=alice).json()
    assert view["stages"]["layout"] == {"planned": 4, "done": 2, "failed": 0, "seconds": 0.5}
    assert view["stages"]["synthesis"]["failed"] == 1
    assert view["errors"][0]["scene_id"] == "s00001" and "exploded" in view["errors"][0]["reason"]


def test_job_files_are_confined_to_job_outputs(api, alice):
    job_id = api.post("/v1/jobs", json=SPEC, headers=alice).json()["job_id"]
    assert api.get(f"/v1/jobs/{job_id}/files/spec.json", headers=alice).status_code == 404
    assert api.get(f"/v1/jobs/{job_id}/files/images/s00000.png", headers=alice).status_code == 404
    api.rt.store.put_bytes(keys.image(job_id, "s00000"), b"\x89PNGfake", "image/png")
    r = api.get(f"/v1/jobs/{job_id}/files/images/s00000.png", headers=alice)
    assert r.status_code == 200 and r.content == b"\x89PNGfake"
