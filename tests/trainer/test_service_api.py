"""/v1/trainings over the real app: validation, queueing on the `training` queue, status, cancel, resume."""

import base64
import json

import pytest
from fastapi.testclient import TestClient

from dreammask.services.api.main import create_app
from dreammask.shared.runtime import build_runtime
from dreammask.shared.settings import Settings
from dreammask.trainer.data.toy import write_toy_dataset
from dreammask.trainer.service.schemas import cancel_key

ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}


@pytest.fixture()
def client(tmp_path, redis_url, redis_client):
    settings = Settings(redis_url=redis_url, storage_root=tmp_path / "objects",
                        api_keys={"key-alice": "alice", "key-bob": "bob"}, public_base_url="http://api.test")
    rt = build_runtime(settings)
    write_toy_dataset(rt.store, "ds-alice", num_images=2, size=32)
    m = rt.store.get_json("datasets/ds-alice/manifest.json")
    m["tenant"] = "alice"
    rt.store.put_json("datasets/ds-alice/manifest.json", m)
    with TestClient(create_app(settings, rt), base_url="http://localhost") as c:
        c.rt = rt
        c.redis = redis_client
        yield c


def _training_messages(redis_client):
    out = []
    for raw in redis_client.lrange("training", 0, -1):
        env = json.loads(raw)
        assert env["content-type"] == "application/json"
        out.append((env["headers"]["task"], json.loads(base64.b64decode(env["body"]))[0]))
    return out


def test_submit_queues_one_message_with_the_id_only(client):
    r = client.post("/v1/trainings", json={"datasets": ["ds-alice"], "iterations": 5, "tiny": True}, headers=ALICE)
    assert r.status_code == 202, r.text
    view = r.json()
    tid = view["training_id"]
    assert view["state"] == "queued" and view["max_iter"] == 5
    assert r.headers["Location"] == f"http://api.test/v1/trainings/{tid}"
    assert _training_messages(client.redis) == [("dreammask.training.run", [tid])]
    assert client.rt.store.exists(f"trainings/{tid}/spec.json")
    got = client.get(f"/v1/trainings/{tid}", headers=ALICE).json()
    assert got["iteration"] == 0 and got["metrics_url"].endswith(f"/v1/trainings/{tid}/metrics")
    assert [t["training_id"] for t in client.get("/v1/trainings", headers=ALICE).json()["items"]] == [tid]
    # another tenant sees nothing
    assert client.get(f"/v1/trainings/{tid}", headers=BOB).status_code == 404
    assert client.get("/v1/trainings", headers=BOB).json()["total"] == 0


def test_bad_requests_name_what_to_change(client):
    r = client.post("/v1/trainings", json={"datasets": ["ds-missing"], "iterations": 5}, headers=ALICE)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "datasets", 0]
    # someone else's dataset is as missing as a missing one
    r = client.post("/v1/trainings", json={"datasets": ["ds-alice"], "iterations": 5}, headers=BOB)
    assert r.status_code == 422
    r = client.post("/v1/trainings", json={"datasets": ["ds-alice"], "iterations": 5,
                                           "overrides": {"SOLVER.NOT_A_KEY": 1}}, headers=ALICE)
    assert r.status_code == 422 and "SOLVER.NOT_A_KEY" in r.text
    r = client.post("/v1/trainings", json={"datasets": ["ds-alice"], "iterations": 5,
                                           "overrides": {"SOLVER.BASE_LR": "fast"}}, headers=ALICE)
    assert r.status_code == 422 and "float" in r.text
    r = client.post("/v1/trainings", json={"datasets": ["ds-alice"], "iterations": 5, "config": "nope"},
                    headers=ALICE)
    assert r.status_code == 422 and "nope" in r.text
    r = client.post("/v1/trainings", json={"datasets": [], "iterations": 5}, headers=ALICE)
    assert r.status_code == 422
    r = client.post("/v1/trainings", json={"datasets": ["ds-alice"], "iterations": 0}, headers=ALICE)
    assert r.status_code == 422
    assert client.redis.llen("training") == 0


def test_cancel_and_resume(client):
    tid = client.post("/v1/trainings", json={"datasets": ["ds-alice"], "iterations": 5, "tiny": True},
                      headers=ALICE).json()["training_id"]
    r = client.post(f"/v1/trainings/{tid}/cancel", headers=ALICE)
    assert r.status_code == 202 and r.json()["state"] == "cancelled"
    assert client.rt.store.exists(cancel_key(tid))
    assert client.post(f"/v1/trainings/{tid}/cancel", headers=ALICE).status_code == 409
    r = client.post(f"/v1/trainings/{tid}/resume", headers=ALICE)
    assert r.status_code == 202 and r.json()["state"] == "queued"
    assert not client.rt.store.exists(cancel_key(tid))
    assert len(_training_messages(client.redis)) == 2
    assert client.post(f"/v1/trainings/{tid}/resume", headers=ALICE).status_code == 409
    assert client.get(f"/v1/trainings/{tid}/metrics", headers=ALICE).json() == {"items": [], "total": 0}


def test_evaluate_a_trainings_checkpoint_as_a_job(client, tmp_path):
    """POST /v1/trainings/evaluations: checked like a training (422 naming the field), queued on the training
    queue, run by the training service; its figures equal the training's own final evaluation."""
    import math

    from dreammask.trainer.service.runner import run_training_job
    from dreammask.trainer.service.settings import TrainerSettings

    settings = TrainerSettings(trainer_cache_dir=tmp_path / "cache")
    tid = client.post("/v1/trainings", json={"datasets": ["ds-alice"], "iterations": 2, "tiny": True,
                                             "eval_datasets": ["synthetic:ds-alice"]}, headers=ALICE).json()["training_id"]
    early = client.post("/v1/trainings/evaluations", json={"weights": tid, "eval_datasets": ["synthetic:ds-alice"]},
                        headers=ALICE)
    assert early.status_code == 422 and early.json()["detail"][0]["loc"] == ["body", "weights"]
    assert "no checkpoint yet" in early.text
    assert run_training_job(client.rt.store, tid, settings)["state"] == "succeeded"
    trained = client.get(f"/v1/trainings/{tid}", headers=ALICE).json()["latest_eval"]["synthetic:ds-alice"]

    def issue(body, headers=ALICE):
        r = client.post("/v1/trainings/evaluations", json=body, headers=headers)
        assert r.status_code == 422, r.text
        return {".".join(str(x) for x in d["loc"][1:]): d["msg"] for d in r.json()["detail"]}

    assert "tr-nope" in issue({"weights": "tr-nope", "eval_datasets": ["synthetic:ds-alice"]})["weights"]
    assert "model_0000002.pth" in issue({"weights": f"{tid}/model_0000009.pth",
                                         "eval_datasets": ["synthetic:ds-alice"]})["weights"]
    assert "weights" in issue({"weights": tid, "eval_datasets": ["synthetic:ds-alice"]}, headers=BOB)
    assert "eval_datasets" in issue({"weights": tid, "eval_datasets": []})
    assert "weights" in issue({"weights": "../../etc/passwd", "eval_datasets": ["synthetic:ds-alice"]})
    assert "coco_2017_val_panoptic" in issue({"weights": tid, "eval_datasets": ["nope"]})["eval_datasets.0"]
    assert "SOLVER.NOPE" in issue({"weights": tid, "eval_datasets": ["synthetic:ds-alice"],
                                   "overrides": {"SOLVER.NOPE": 1}})["overrides.SOLVER.NOPE"]
    r = client.post("/v1/trainings", json={"kind": "evaluate", "weights": tid, "eval_datasets": ["x"]}, headers=ALICE)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "kind"]

    r = client.post("/v1/trainings/evaluations", json={"weights": tid, "eval_datasets": ["synthetic:ds-alice"],
                                                       "name": "eval"}, headers=ALICE)
    assert r.status_code == 202, r.text
    eid = r.json()["training_id"]
    assert r.json()["kind"] == "evaluate" and r.json()["state"] == "queued"
    assert ("dreammask.training.run", [eid]) in _training_messages(client.redis)
    stored = client.rt.store.get_json(f"trainings/{eid}/spec.json")["spec"]
    assert stored["tiny"] is True and stored["weights"] == tid  # the training's own preset
    assert client.get(f"/v1/trainings/{eid}/evaluation", headers=ALICE).status_code == 404

    assert run_training_job(client.rt.store, eid, settings)["state"] == "succeeded"
    view = client.get(f"/v1/trainings/{eid}", headers=ALICE).json()
    evaluation = client.get(f"/v1/trainings/{eid}/evaluation", headers=ALICE).json()
    assert client.get(f"/v1/trainings/{eid}/evaluation", headers=BOB).status_code == 404
    figures = evaluation["datasets"]["synthetic:ds-alice"]["metrics"]
    assert view["latest_eval"]["synthetic:ds-alice"] == figures
    for key in ("mIoU", "PQ", "SQ", "RQ", "PQ_th", "PQ_st", "mIoU_unseen"):
        a, b = figures[key], trained[key]
        assert a == b or (a is None and (b is None or math.isnan(b))), key
    rows = evaluation["datasets"]["synthetic:ds-alice"]["classes"]
    assert [r["class"] for r in rows] == [r["class"] for r in trained["classes"]]
    assert all({"seen", "novel", "IoU", "PQ", "SQ", "RQ"} <= set(r) for r in rows)
    assert evaluation["weights"].endswith("model_0000002.pth") and "loaded" in evaluation["weights_report"]["summary"]


def test_a_training_from_weights_shows_every_name_that_did_not_load(client, tmp_path):
    """GET /v1/trainings/{id}: a finished training's `result` carries the weights report by name (missing,
    unused, shape_mismatch), not only its counts."""
    from dreammask.trainer.service.runner import run_training_job
    from dreammask.trainer.service.settings import TrainerSettings

    settings = TrainerSettings(trainer_cache_dir=tmp_path / "cache")
    first = client.post("/v1/trainings", json={"datasets": ["ds-alice"], "iterations": 1, "tiny": True,
                                               "overrides": {"ENGINE.CHECKPOINT_FROZEN": False}}, headers=ALICE)
    tid = first.json()["training_id"]
    assert run_training_job(client.rt.store, tid, settings)["state"] == "succeeded"
    # other query counts: the query embeddings do not fit; the first checkpoint left the frozen CLIP out
    r = client.post("/v1/trainings", json={"datasets": ["ds-alice"], "iterations": 1, "tiny": True, "weights": tid,
                                           "overrides": {"MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 5}}, headers=ALICE)
    assert r.status_code == 202, r.text
    second = r.json()["training_id"]
    assert client.get(f"/v1/trainings/{second}", headers=ALICE).json()["result"] is None  # not finished yet
    assert run_training_job(client.rt.store, second, settings)["state"] == "succeeded"
    report = client.get(f"/v1/trainings/{second}", headers=ALICE).json()["result"]["weights_report"]
    assert {m["target"] for m in report["shape_mismatch"]} == {"predictor.query_feat.weight",
                                                               "predictor.query_embed.weight"}
    assert report["missing"] and all(n.startswith("backbone.clip_model.") or n.startswith("predictor.query_")
                                     for n in report["missing"])
    assert report["unused"] == [] and report["loaded"] + len(report["missing"]) == report["target_tensors"]
    assert f"{len(report['missing'])} missing" in report["summary"]
