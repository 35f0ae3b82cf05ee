"""A small job through real worker processes, Redis queues and object storage."""

from __future__ import annotations

import json

import pytest
from pycocotools import mask as mask_utils

from dreammask.shared import keys

pytestmark = pytest.mark.integration

SMALL_JOB = {
    "train_categories": ["person", "dog", "car", "tree", "building", "sky", "road", "bench"],
    "num_novel": 2,
    "images_per_category": 2,
    "image_size": 128,
    "seed": 7,
}


def test_job_runs_end_to_end_through_workers(platform):
    p = platform()
    job_id = p.submit(SMALL_JOB)
    view = p.wait(job_id, timeout=240)
    assert view["state"] == "succeeded", view
    assert view["stages"]["annotation"]["done"] + view["stages"]["annotation"]["failed"] == 4
    assert view["stages"]["synthesis"]["done"] == 4
    ds_id = view["dataset_id"]
    assert ds_id == keys.dataset_id_for_job(job_id)

    # Every stage output lives in object storage under the documented keys.
    for i in range(4):
        sid = keys.scene_id(i)
        for key in (keys.layout(job_id, sid), keys.image(job_id, sid), keys.render_record(job_id, sid),
                    keys.annotation(job_id, sid)):
            assert p.store.exists(key), key

    # The dataset is listed with download links, and its COCO file loads in pycocotools.
    r = p.client.get(f"/v1/datasets/{ds_id}")
    assert r.status_code == 200
    paths = {f["path"] for f in r.json()["files"]}
    assert {keys.COCO_INSTANCES, keys.COCO_PANOPTIC, keys.CARD_JSON, keys.CONTACT_SHEET} <= paths
    coco = json.loads(p.client.get(f"/v1/datasets/{ds_id}/files/{keys.COCO_INSTANCES}").content)
    assert all(img["is_synthetic"] for img in coco["images"])
    for ann in coco["annotations"]:
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        assert mask_utils.area(rle) == ann["area"]
    card = r.json()["manifest"]
    assert card["images"] == len(coco["images"])

    # Scenes are browsable with their stage status and scores.
    scenes = p.client.get(f"/v1/jobs/{job_id}/scenes").json()
    assert scenes["total"] == 4
    first = scenes["items"][0]
    # One status per per-scene stage of the chain, in its order.
    assert first["stages"] == {"layout": "done", "synthesis": "done", "annotation": "done", "curation": "done"}
    assert first["instances"] and "quality" in first["instances"][0]["scores"]
    img = p.client.get(first["image_url"].replace(p.api_url, ""))
    assert img.status_code == 200 and img.content[:4] == b"\x89PNG"


def test_cli_drives_the_platform(platform, tmp_path):
    from typer.testing import CliRunner

    from dreammask.services.cli import app

    p = platform()
    run = CliRunner().invoke
    opts = ["--api-url", p.api_url, "--api-key", p.api_key]
    spec = tmp_path / "spec.yaml"
    spec.write_text("train_categories: [person, dog, car]\nnum_novel: 1\nimages_per_category: 2\nimage_size: 96\n")

    r = run(app, ["submit", str(spec), "--seed", "3", "--watch", *opts])
    assert r.exit_code == 0, r.output
    assert "succeeded" in r.output
    job_id = r.output.split("job ", 1)[1].split()[0]
    view = p.job(job_id)
    assert view["state"] == "succeeded"

    r = run(app, ["list", *opts])
    assert r.exit_code == 0 and job_id in r.output

    r = run(app, ["download", view["dataset_id"], "--to", str(tmp_path / "dl"), *opts])
    assert r.exit_code == 0, r.output
    ds = tmp_path / "dl" / view["dataset_id"]
    from pycocotools.coco import COCO

    coco = COCO(str(ds / "annotations" / "instances.json"))
    assert len(coco.getImgIds()) == view_images(p, view["dataset_id"])
    assert (ds / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"

    # Bad input: the CLI shows the field and what to change, and exits non-zero.
    r = run(app, ["submit", "--categories", "dog,dog", *opts])
    assert r.exit_code == 1 and "train_categories" in r.output and "duplicates" in r.output

    r = run(app, ["resume", job_id, *opts])
    assert r.exit_code == 1 and "already succeeded" in r.output

    # A job that ends cancelled: `cancel` itself succeeds, `watch` then exits non-zero for scripts.
    bad = p.submit({"train_categories": ["dog", "car"], "num_novel": 1, "images_per_category": 50, "image_size": 64})
    r = run(app, ["cancel", bad, *opts])
    assert r.exit_code == 0 and "cancelled" in r.output
    r = run(app, ["watch", bad, *opts])
    assert r.exit_code == 1 and "cancelled" in r.output


def view_images(p, dataset_id: str) -> int:
    return p.client.get(f"/v1/datasets/{dataset_id}").json()["manifest"]["images"]


def test_job_on_s3_storage_with_presigned_downloads(platform, s3_server):
    """The same job with every payload in an S3-protocol store; datasets download from presigned URLs."""
    import httpx

    env = {
        "DREAMMASK_STORAGE_BACKEND": "s3",
        "DREAMMASK_S3_ENDPOINT": s3_server["endpoint"],
        "DREAMMASK_S3_ACCESS_KEY": s3_server["access_key"],
        "DREAMMASK_S3_SECRET_KEY": s3_server["secret_key"],
        "DREAMMASK_S3_BUCKET": "e2e-bucket",
        # Clients reach the store under another name than the services do.
        "DREAMMASK_S3_PUBLIC_ENDPOINT": f"localhost:{s3_server['port']}",
    }
    p = platform(env=env)
    job_id = p.submit({**SMALL_JOB, "num_novel": 1})
    view = p.wait(job_id, timeout=240)
    assert view["state"] == "succeeded", view
    assert p.store.exists(keys.annotation(job_id, "s00000"))
    assert not (p.root / "objects").exists()  # nothing went to the local directory

    files = p.client.get(f"/v1/datasets/{view['dataset_id']}").json()["files"]
    card = next(f for f in files if f["path"] == keys.CARD_JSON)
    assert card["presigned"] and card["url"].startswith(f"http://localhost:{s3_server['port']}/")
    r = httpx.get(card["url"])  # no API key: the signature is the authorisation
    assert r.status_code == 200 and r.json()["dataset_id"] == view["dataset_id"]


def test_models_load_in_the_worker_child_only(platform):
    """With the prefork pool, each worker's child process loads its backends once; the parent never does."""
    p = platform(env={"DREAMMASK_PRELOAD_BACKENDS": '["association:embedding", "masks:grabcut"]'},
                 services=("association", "annotation"))
    for svc in ("association", "annotation"):
        log = (p.root / "logs" / f"{svc}.log").read_text()
        assert log.count("worker process ready") == 1, log[-3000:]
    assert "preloaded backends: ['association:embedding']" in (p.root / "logs" / "association.log").read_text()
    assert "preloaded backends: ['masks:grabcut']" in (p.root / "logs" / "annotation.log").read_text()
