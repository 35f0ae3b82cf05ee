"""The training worker on a real queue: API -> Redis -> Celery worker process -> trainer -> storage."""

import time

import pytest

from dreammask.trainer.data.toy import write_toy_dataset


@pytest.mark.integration
def test_training_worker_runs_a_submitted_training(platform):
    p = platform(services=(), extra_workers=[("training", "dreammask.trainer.service.worker", "training")],
                 env={"DREAMMASK_TRAINER_CACHE_DIR": "cache/datasets"})
    write_toy_dataset(p.store, "ds-w", num_images=2, size=48)
    m = p.store.get_json("datasets/ds-w/manifest.json")
    m["tenant"] = p.tenant
    p.store.put_json("datasets/ds-w/manifest.json", m)

    r = p.client.post("/v1/trainings", json={
        "datasets": ["ds-w"], "eval_datasets": ["synthetic:ds-w"], "iterations": 3, "tiny": True,
        "overrides": {"ENGINE.STATUS_PERIOD": 1}})
    assert r.status_code == 202, r.text
    tid = r.json()["training_id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        view = p.client.get(f"/v1/trainings/{tid}").json()
        if view["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(1)
    assert view["state"] == "succeeded", (view, (p.logs / "training.log").read_text()[-3000:])
    assert view["iteration"] == 3 and view["losses"]["total_loss"] > 0
    assert "mIoU" in view["latest_eval"]["synthetic:ds-w"]
    metrics = p.client.get(f"/v1/trainings/{tid}/metrics").json()
    assert metrics["total"] >= 3
    assert p.store.exists(f"trainings/{tid}/checkpoints/model_0000003.pth")
