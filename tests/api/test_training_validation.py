"""POST /v1/trainings checks what it can before queueing: a 422 that names the field and what exists."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dreammask.services.api.main import create_app
from dreammask.shared.runtime import build_runtime
from dreammask.shared.schemas import JobSpec, JobState
from dreammask.shared.settings import Settings
from dreammask.trainer.data.toy import write_toy_dataset

ALICE = {"Authorization": "Bearer key-alice"}


@pytest.fixture()
def client(tmp_path, redis_url, redis_client, monkeypatch):
    monkeypatch.delenv("DREAMMASK_TRAINER_DATASETS_ROOT", raising=False)
    models = tmp_path / "models"
    (models / "open_clip").mkdir(parents=True)
    (models / "open_clip" / "other_model.bin").write_bytes(b"x")
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", api_keys={"key-alice": "alice"},
                 models_dir=models)
    rt = build_runtime(s)
    # A finished job of alice's whose dataset exists.
    job = rt.tracker.create(JobSpec(train_categories=["dog"], num_novel=1, images_per_category=1), "alice", ["dog"])
    ds = f"ds-{job.job_id}"
    write_toy_dataset(rt.store, ds, num_images=1, size=32)
    m = rt.store.get_json(f"datasets/{ds}/manifest.json")
    rt.store.put_json(f"datasets/{ds}/manifest.json", {**m, "tenant": "alice"})
    rt.tracker.transition(job.job_id, JobState.succeeded, "done", dataset_id=ds)
    with TestClient(create_app(s, rt), base_url="http://localhost") as c:
        c.ds = ds
        c.redis = redis_client
        yield c


def _issues(r):
    assert r.status_code == 422, r.text
    return {".".join(str(x) for x in d["loc"][1:]): d["msg"] for d in r.json()["detail"]}


def test_unknown_config_is_refused_even_with_tiny(client):
    issues = _issues(client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2, "tiny": True,
                                                        "config": "huge.yaml"}, headers=ALICE))
    assert "huge.yaml" in issues["config"] and "dreammask_convnext_large.yaml" in issues["config"]


def test_a_config_with_tiny_is_not_silently_ignored(client):
    issues = _issues(client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2, "tiny": True,
                                                        "config": "fcclip_convnext_large.yaml"}, headers=ALICE))
    assert "tiny" in issues["config"]


def test_missing_dataset_lists_yours(client):
    issues = _issues(client.post("/v1/trainings", json={"datasets": ["ds-nope"], "iterations": 2, "tiny": True},
                                 headers=ALICE))
    assert "ds-nope" in issues["datasets.0"] and client.ds in issues["datasets.0"]


def test_unknown_real_dataset_lists_the_registered_ones(client):
    issues = _issues(client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2, "tiny": True,
                                                        "real_datasets": ["coco_2099_panoptic"],
                                                        "eval_datasets": ["nope"]}, headers=ALICE))
    assert "coco_2017_train_panoptic" in issues["real_datasets.0"]
    assert "synthetic:<dataset id>" in issues["eval_datasets.0"]
    # the action comes first, then the detail
    assert issues["real_datasets.0"].startswith("use a registered dataset (did you mean 'coco_2017_val_panoptic'?), "
                                                "not 'coco_2099_panoptic': ")
    assert issues["eval_datasets.0"].startswith("use a registered dataset, not 'nope': synthetic:<dataset id>, ")
    assert "…" not in issues["real_datasets.0"] + issues["eval_datasets.0"]  # under the API's 300 characters


def test_a_near_miss_is_named_first(client):
    issues = _issues(client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2, "tiny": True,
                                                        "real_datasets": ["coco_2017_train_panoptc"]}, headers=ALICE))
    assert issues["real_datasets.0"].startswith("use a registered dataset (did you mean "
                                                "'coco_2017_train_panoptic'?)")


def test_the_toy_world_needs_no_registration(client):
    issues = _issues(client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2, "tiny": True,
                                                        "real_datasets": ["toy_world_trian"]}, headers=ALICE))
    assert "did you mean 'toy_world_train'?" in issues["real_datasets.0"]
    r = client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2, "tiny": True,
                                           "real_datasets": ["toy_world_train"], "eval_datasets": ["toy_world_val"]},
                    headers=ALICE)
    assert r.status_code == 202, r.text


def test_registered_real_dataset_missing_on_disk(client, tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    root.mkdir()
    monkeypatch.setenv("DREAMMASK_TRAINER_DATASETS_ROOT", str(root))
    issues = _issues(client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2, "tiny": True,
                                                        "real_datasets": ["coco_2017_train_panoptic"]},
                                 headers=ALICE))
    assert "panoptic_train2017.json" in issues["real_datasets.0"] and "missing" in issues["real_datasets.0"]
    # the command to run comes first, with the root the trainer reads
    assert issues["real_datasets.0"].startswith(
        f"prepare it on the trainer: `python -m dreammask.trainer.data.prepare coco --root {root}`")


def test_missing_weights_name_what_is_there(client):
    issues = _issues(client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2,
                                                        "config": "fcclip_convnext_large.yaml"}, headers=ALICE))
    assert "CLIP weights" in issues["config"] and "open_clip/other_model.bin" in issues["config"]
    # without a config, the deployment's default config is checked the same way
    issues = _issues(client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2}, headers=ALICE))
    assert "CLIP weights" in issues["config"]
    assert client.redis.llen("training") == 0


def test_a_valid_tiny_training_is_accepted(client):
    r = client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2, "tiny": True}, headers=ALICE)
    assert r.status_code == 202, r.text


def test_overrides_cannot_reach_the_workers_paths_devices_or_weights(client, monkeypatch):
    """The builder's rule (request_overrides) answers at submission: each key named with what to use instead,
    nothing queued. Before, these keys were merged last and won over the checked fields."""
    monkeypatch.setenv("DREAMMASK_TRAINER_MAX_ITERATIONS", "1000")
    issues = _issues(client.post("/v1/trainings", json={
        "datasets": [client.ds], "iterations": 2, "tiny": True,
        "overrides": {"MODEL.WEIGHTS": "/etc/shadow", "OUTPUT_DIR": "/srv", "DATASETS.ROOT": "/", "MODEL.DEVICE": "cuda:7",
                      "SOLVER.MAX_ITER": 10 ** 9, "DATASETS.SYNTHETIC.IDS": ["ds-bobs"], "SOLVER.BASE_LR": 1e-4}},
        headers=ALICE))
    assert set(issues) == {"overrides.MODEL.WEIGHTS", "overrides.OUTPUT_DIR", "overrides.DATASETS.ROOT",
                           "overrides.MODEL.DEVICE", "overrides.SOLVER.MAX_ITER", "overrides.DATASETS.SYNTHETIC.IDS"}
    assert "`weights` field" in issues["overrides.MODEL.WEIGHTS"]
    assert "at most 1000" in issues["overrides.SOLVER.MAX_ITER"]
    assert "`datasets` field" in issues["overrides.DATASETS.SYNTHETIC.IDS"]
    # an evaluation cannot swap the checkpoint it scores either
    issues = _issues(client.post("/v1/trainings/evaluations", json={
        "weights": "fcclip/fcclip_cocopan.pth", "eval_datasets": ["toy_world_val"], "tiny": True,
        "overrides": {"MODEL.WEIGHTS": "/etc/shadow"}}, headers=ALICE))
    assert "`weights` field" in issues["overrides.MODEL.WEIGHTS"]
    assert client.redis.llen("training") == 0


def test_more_gpus_than_the_deployment_runs_is_422(client, monkeypatch):
    monkeypatch.setenv("DREAMMASK_TRAINER_GPUS", "2")
    issues = _issues(client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2, "tiny": True,
                                                        "gpus": 4}, headers=ALICE))
    assert "at most 2" in issues["gpus"] and "DREAMMASK_TRAINER_GPUS" in issues["gpus"]
    r = client.post("/v1/trainings", json={"datasets": [client.ds], "iterations": 2, "tiny": True, "gpus": 2},
                    headers=ALICE)
    assert r.status_code == 202, r.text
