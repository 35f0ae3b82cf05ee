from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from dreammask.services.api.main import create_app
from dreammask.services.cli.harness import free_port
from dreammask.shared.runtime import build_runtime
from dreammask.shared.settings import Settings
from dreammask.shared.storage.s3 import S3ObjectStore


def test_healthz_and_readyz(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    r = api.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"broker": "ok", "storage": "ok"}


def test_readyz_is_503_when_broker_is_down(tmp_path):
    s = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", storage_root=tmp_path)
    with TestClient(create_app(s, build_runtime(s)), base_url="http://localhost") as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["broker"].startswith("unreachable") and r.json()["checks"]["storage"] == "ok"


def test_readyz_is_503_when_storage_is_down(redis_url):
    s = Settings(redis_url=redis_url)
    # An S3 endpoint where nothing listens.
    store = S3ObjectStore(f"127.0.0.1:{free_port()}", "k", "s", "b", create_bucket=False, timeout_s=0.5, retries=0)
    rt = build_runtime(s, store=store)
    with TestClient(create_app(s, rt), base_url="http://localhost") as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["storage"].startswith("unreachable")


def test_metrics_expose_queue_depth_and_requests_behind_a_token(api_settings, redis_client, alice):
    s = api_settings.model_copy(update={"metrics_token": SecretStr("scrape-me")})
    with TestClient(create_app(s, build_runtime(s)), base_url="http://localhost") as c:
        c.post("/v1/jobs", json={"train_categories": ["a"], "num_novel": 1, "images_per_category": 1},
               headers=alice)
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=alice).status_code == 401  # an API key is not the metrics token
        text = c.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).text
    assert 'dreammask_queue_depth{queue="association"} 1.0' in text
    assert "dreammask_http_requests_total" in text
    # Tenant names stay out of the metrics unless DREAMMASK_METRICS_TENANT_LABELS is on.
    assert 'dreammask_jobs_submitted_total{tenant="all"}' in text and 'tenant="alice"' not in text


def test_metrics_are_off_without_a_token(api):
    r = api.get("/metrics")
    assert r.status_code == 404 and "DREAMMASK_METRICS_TOKEN" in r.json()["detail"]


def test_submit_with_the_broker_down_is_503_and_keeps_the_job(tmp_path):
    s = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", storage_root=tmp_path, api_keys={"k": "t"},
                 retry_backoff_max_s=1)
    rt = build_runtime(s)
    with TestClient(create_app(s, rt), base_url="http://localhost") as c:
        r = c.post("/v1/jobs", json={"train_categories": ["dog"], "num_novel": 1, "images_per_category": 1},
                   headers={"Authorization": "Bearer k"})
    assert r.status_code == 503
    job_id = r.json()["job_id"]
    assert "resume" in r.json()["detail"]
    assert rt.tracker.spec(job_id).tenant == "t"  # nothing is lost: resume can queue it later
