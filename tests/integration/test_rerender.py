"""Re-rendering a sample: POST /v1/jobs/{id}/samples/{sid}/rerender makes a re-render job linked to its origin;
unchanged it reproduces the origin's pixels (the embedded preview renderer, and the tiny GLIGEN of
tests/synthesis on the CPU); overrides are checked like a job spec with the deployment's limits; the render
records pin package versions and weight hashes. Everything runs in this process on the real stage functions."""

from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dreammask.services.api.main import create_app
from dreammask.services.cli.inprocess import in_process_dispatcher, run_pending
from dreammask.shared import keys
from dreammask.shared.provenance import PINNED_PACKAGES, file_sha256
from dreammask.shared.runtime import build_runtime, set_runtime
from dreammask.shared.schemas import JobPlan, RenderRecord
from dreammask.shared.settings import Settings

ALICE, BOB = {"Authorization": "Bearer key-alice"}, {"Authorization": "Bearer key-bob"}
JOB = {"train_categories": ["person", "dog", "car", "building", "sky", "road"], "num_novel": 1,
       "images_per_category": 2, "image_size": 96, "seed": 3}


@pytest.fixture()
def api(tmp_path, redis_client, redis_url, shared_cache_dir):
    def make(**settings):
        s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", cache_dir=shared_cache_dir,
                     api_keys={"key-alice": "alice", "key-bob": "bob"}, public_base_url="http://api.test",
                     **settings)
        rt = build_runtime(s, dispatcher=in_process_dispatcher())
        set_runtime(rt)
        client = TestClient(create_app(s, rt), base_url="http://api.test")
        client.rt = rt
        return client

    yield make
    set_runtime(None)


def pixels(store, key: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(store.get_bytes(key))).convert("RGB"))


def run_job(client, spec: dict) -> str:
    r = client.post("/v1/jobs", json=spec, headers=ALICE)
    assert r.status_code == 202, r.text
    run_pending(client.rt)
    job = r.json()["job_id"]
    assert client.get(f"/v1/jobs/{job}", headers=ALICE).json()["state"] == "succeeded"
    return job


def rerender(client, job: str, sid: str, body: dict | None = None, headers=ALICE):
    return client.post(f"/v1/jobs/{job}/samples/{sid}/rerender", json=body, headers=headers)


def test_rerender_reproduces_the_sample_and_links_it(api):
    client = api(max_synthesis_steps=60)
    store = client.rt.store
    job = run_job(client, JOB)
    sid = "s00001"
    origin = store.get_model(keys.render_record(job, sid), RenderRecord)
    assert set(origin.environment["packages"]) == set(PINNED_PACKAGES)
    assert origin.environment["packages"]["dreammask"] and origin.environment["weights"] == {}  # preview: none

    r = rerender(client, job, sid)
    assert r.status_code == 202, r.text
    view = r.json()
    new = view["job_id"]
    assert view["rerender_of"] == {"job_id": job, "scene_id": sid, "render_seed": origin.seed, "overrides": {}}
    assert r.headers["Location"] == f"http://api.test/v1/jobs/{new}" and view["planned_scenes"] == 1
    run_pending(client.rt)
    final = client.get(f"/v1/jobs/{new}", headers=ALICE).json()
    assert final["state"] == "succeeded" and final["rerender_of"]["scene_id"] == sid
    record = store.get_model(keys.render_record(new, "s00000"), RenderRecord)
    assert record.origin.model_dump() == {"job_id": job, "scene_id": sid}
    assert record.seed == origin.seed and record.synthesis == origin.synthesis
    assert (pixels(store, record.image_key) == pixels(store, origin.image_key)).all()  # the same pixels
    plan = store.get_model(keys.plan(new), JobPlan)
    assert plan.scenes[0].stage_seeds == {"synthesis": origin.seed} and plan.scenes[0].origin.scene_id == sid
    assert plan.scenes[0].seed == store.get_model(keys.plan(job), JobPlan).scene(sid).seed
    assert list(store.list(keys.rerenders_prefix(job, sid))) == [keys.rerender_marker(job, sid, new)]
    assert store.exists(keys.dataset_manifest_for_job(new))  # annotated and curated like any scene

    # Overrides: another seed and size give another image of the same layout.
    r = rerender(client, job, sid, {"seed": 99, "image_size": 128, "steps": 40, "guidance_scale": 3.0})
    assert r.status_code == 202, r.text
    assert r.json()["rerender_of"]["overrides"] == {"seed": 99, "image_size": 128, "steps": 40, "guidance_scale": 3.0}
    run_pending(client.rt)
    other = store.get_model(keys.render_record(r.json()["job_id"], "s00000"), RenderRecord)
    assert other.seed == 99 and (other.width, other.height) == (128, 128)
    assert other.synthesis.steps == 40 and other.synthesis.guidance_scale == 3.0
    assert other.layout_key.endswith("/layouts/s00000.json")
    again = store.get_model(keys.render_record(new, "s00000"), RenderRecord)
    assert store.get_json(other.layout_key)["objects"] == store.get_json(again.layout_key)["objects"]


@pytest.mark.parametrize("body, loc, mention", [
    ({"steps": 61}, ["body", "steps"], "61 steps; this deployment renders with"),
    ({"image_size": 100}, ["body", "image_size"], "multiple of 8"),
    ({"image_size": 4096}, ["body", "image_size"], "renders at most"),
    ({"guidance_scale": 31}, ["body", "guidance_scale"], "less than or equal to 30"),
    ({"guidance_scale": 25}, ["body", "guidance_scale"], "this deployment's limit is 20"),
    ({"seed": -1}, ["body", "seed"], "greater than or equal to 0"),
    ({"sed": 3}, ["body", "sed"], "Extra inputs"),
])
def test_overrides_are_checked_like_a_job_spec(api, body, loc, mention):
    client = api(max_synthesis_steps=60)
    job = run_job(client, JOB)
    r = rerender(client, job, "s00000", body)
    assert r.status_code == 422, r.text
    assert any(d["loc"] == loc and mention in d["msg"] for d in r.json()["detail"]), r.json()
    assert list(client.rt.store.list(keys.rerenders_prefix(job, "s00000"))) == []


def test_unknown_samples_and_other_tenants_are_404(api):
    client = api()
    job = run_job(client, JOB)
    assert rerender(client, job, "s00099").status_code == 404
    assert rerender(client, job, "../x").status_code == 404
    assert rerender(client, job, "s00000", headers=BOB).status_code == 404
    assert rerender(client, "j-nope", "s00000").status_code == 404


def test_weight_hashes_are_computed_once_per_process(tmp_path):
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 1000)
    digest = file_sha256(f)
    assert digest == "sha256:" + hashlib.sha256(b"a" * 1000).hexdigest()
    st = f.stat()
    f.write_bytes(b"b" * 1000)  # same size, mtime put back: the cached hash is returned, the file not read
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_sha256(f) == digest
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed file is hashed again
    assert file_sha256(f) == "sha256:" + hashlib.sha256(b"b" * 1000).hexdigest()


@pytest.fixture(scope="module")
def gligen_dir(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "synthesis"))
    from tiny_gligen import build_tiny_gligen

    models = tmp_path_factory.mktemp("models")
    build_tiny_gligen(models)
    return models


def test_rerender_with_the_tiny_gligen_gives_the_same_pixels(api, gligen_dir, monkeypatch):
    import torch
    from tiny_gligen import TINY_IMAGE_SIZE, TINY_MODEL_SUBPATH

    torch.set_num_threads(1)
    monkeypatch.setenv("DREAMMASK_GLIGEN_MODEL_PATH", TINY_MODEL_SUBPATH)
    monkeypatch.setenv("DREAMMASK_GLIGEN_WARMUP_IMAGE_SIZE", str(TINY_IMAGE_SIZE))
    # One scene per GPU batch, as the re-render renders it: same batch composition, bit-identical (a scene
    # rendered in a batch of others differs by at most one level, tests/synthesis/test_gligen_backend.py).
    monkeypatch.setenv("DREAMMASK_GLIGEN_BATCH_SIZE", "1")
    deployed = {"association": ["embedding"], "layout": ["prior"], "synthesis": ["preview", "gligen"],
                "masks": ["grabcut"], "scores": ["geometric"]}
    client = api(models_dir=gligen_dir, device="cpu", deployed_backends=deployed, synthesis_batch_size=1)
    spec = {**JOB, "image_size": TINY_IMAGE_SIZE, "images_per_category": 1, "max_objects_per_scene": 3,
            "backends": {"synthesis": "gligen"}, "synthesis": {"steps": 2, "scheduler": "ddim"}}
    job = run_job(client, spec)
    store = client.rt.store
    origin = store.get_model(keys.render_record(job, "s00000"), RenderRecord)
    weights = origin.environment["weights"]
    folder = gligen_dir / TINY_MODEL_SUBPATH
    assert weights and all(w == file_sha256(folder / name) for name, w in weights.items())
    assert any(name.endswith(".safetensors") for name in weights)
    r = rerender(client, job, "s00000")
    assert r.status_code == 202, r.text
    run_pending(client.rt)
    record = store.get_model(keys.render_record(r.json()["job_id"], "s00000"), RenderRecord)
    assert record.backend == "gligen" and record.environment == origin.environment
    assert (pixels(store, record.image_key) == pixels(store, origin.image_key)).all()
