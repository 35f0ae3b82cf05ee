"""Review history is bounded: a sample decided thousands of times keeps its last N decisions and a count of
the rest, while its current marks still follow every decision."""

from __future__ import annotations

from dreammask.shared import keys
from dreammask.shared import review as rv
from dreammask.shared.schemas import RLE, InstanceAnnotation, SceneAnnotation

ALICE = {"Authorization": "Bearer key-alice"}
SPEC = {"train_categories": ["dog"], "num_novel": 1, "images_per_category": 1, "image_size": 64}


def test_apply_keeps_the_last_n_and_counts_the_rest():
    rec = rv.SampleReview(job_id="j", scene_id="s00000")
    for i in range(25):
        rec.apply(rv.ReviewEvent(instance_id=None, decision="accept" if i % 2 else "reject", who=f"w{i}"), keep=10)
    assert len(rec.history) == 10 and rec.history_dropped == 15
    assert [e.who for e in rec.history] == [f"w{i}" for i in range(15, 25)]
    assert rec.sample.decision == "reject" and rec.sample.who == "w24"  # the last decision is the mark


def test_the_stored_record_stays_small_over_the_rest_api(api, alice, monkeypatch):
    monkeypatch.setattr(api.rt.settings, "review_history_limit", 20)
    job_id = api.post("/v1/jobs", json=SPEC, headers=alice).json()["job_id"]
    ann = SceneAnnotation(job_id=job_id, scene_id="s00000", image_key=keys.image(job_id, "s00000"), width=8,
                          height=8, mask_backend="grabcut", score_backend="geometric",
                          instances=[InstanceAnnotation(instance_id=1, category="dog", is_novel=False,
                                                        bbox=[0, 0, 4, 4], mask=RLE(size=[8, 8], counts="0"),
                                                        area=16)])
    api.rt.store.put_json(keys.annotation(job_id, "s00000"), ann)
    for i in range(300):
        body = {"scene_id": "s00000", "instance_id": 1 if i % 3 else None,
                "decision": ("accept", "reject", "clear")[i % 3]}
        assert api.post(f"/v1/jobs/{job_id}/reviews", json=body, headers=alice).status_code == 201
    raw = api.rt.store.get_bytes(rv.review(job_id, "s00000"))
    rec = rv.SampleReview.model_validate_json(raw)
    assert len(rec.history) == 20 and rec.history_dropped == 280
    assert len(raw) < 5000  # 300 decisions, a record of a few kilobytes
    listed = api.get(f"/v1/jobs/{job_id}/reviews", headers=alice).json()["items"][0]
    assert listed["history_dropped"] == 280 and len(listed["history"]) == 20
    # The marks follow the last decisions: i = 299 cleared instance 1, i = 297 accepted the sample.
    assert listed["instances"] == {} and listed["sample"]["decision"] == "accept"
