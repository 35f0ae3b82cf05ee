"""Per-tenant quotas: concurrent submissions never take more than the quota, a submission over a quota is a
429 that names it with Retry-After, finishing or deleting frees what it held, and one tenant's use never
counts against another's."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient

from dreammask.services.api.main import create_app
from dreammask.shared import deletion, keys, quotas
from dreammask.shared.runtime import build_runtime
from dreammask.shared.settings import Settings

KEYS = {"key-alice": "alice", "key-bob": "bob"}

SPEC = {"train_categories": ["dog", "cat"], "num_novel": 1, "images_per_category": 2, "image_size": 64}
ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}


def _client(tmp_path, redis_url, raise_server_exceptions=True, **quota):
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", api_keys=KEYS,
                 public_base_url="http://api.test", **quota)
    rt = build_runtime(s)
    client = TestClient(create_app(s, rt), base_url="http://api.test", raise_server_exceptions=raise_server_exceptions)
    client.rt = rt
    return client


def test_reservations_are_atomic_under_concurrency(redis_client, all_at_once):
    lim = quotas.Limits(active_jobs=7, scenes_per_day=0, stored_bytes=0)

    def take(i):
        r = redis.Redis(connection_pool=redis_client.connection_pool)
        try:
            quotas.reserve_job(r, "alice", f"j{i:03d}", 1, 10, lim)
            return "ok"
        except quotas.QuotaExceeded as e:
            return e.quota

    results = all_at_once(take, 40)
    assert results.count("ok") == 7 and results.count("active_jobs") == 33
    assert len(quotas.active_jobs(redis_client, "alice")) == 7
    assert quotas.stored_bytes(redis_client, "alice") == 70  # the _total is the sum of what was reserved


def test_concurrent_submits_over_http_stop_at_the_active_job_quota(tmp_path, redis_url, redis_client,
                                                                    all_at_once):
    with _client(tmp_path, redis_url, quota_active_jobs=3) as c:
        responses = all_at_once(lambda _: c.post("/v1/jobs", json=SPEC, headers=ALICE), 12)
        codes = sorted(r.status_code for r in responses)
        assert codes == [202] * 3 + [429] * 9, codes
        refused = next(r for r in responses if r.status_code == 429)
        body = refused.json()
        assert body["quota"] == "active_jobs" and body["limit"] == 3 and body["used"] == 3
        assert "active_jobs" in body["detail"] and "DREAMMASK_QUOTA_ACTIVE_JOBS" in body["detail"]
        assert int(refused.headers["Retry-After"]) > 0
        # Exactly the accepted jobs exist, and hold the slots.
        accepted = {r.json()["job_id"] for r in responses if r.status_code == 202}
        assert set(c.rt.tracker.list_jobs("alice")) == accepted
        assert quotas.active_jobs(redis_client, "alice") == accepted
        # Another tenant is not affected.
        assert c.post("/v1/jobs", json=SPEC, headers=BOB).status_code == 202
        # Cancelling one frees its slot.
        job = sorted(accepted)[0]
        assert c.post(f"/v1/jobs/{job}/cancel", headers=ALICE).status_code == 202
        assert c.post("/v1/jobs", json=SPEC, headers=ALICE).status_code == 202
        assert c.post("/v1/jobs", json=SPEC, headers=ALICE).status_code == 429
        # Resuming the cancelled job needs a slot again.
        r = c.post(f"/v1/jobs/{job}/resume", headers=ALICE)
        assert r.status_code == 429 and r.json()["quota"] == "active_jobs"
        assert c.get(f"/v1/jobs/{job}", headers=ALICE).json()["state"] == "cancelled"


def test_scenes_per_day_quota_names_itself_and_waits_for_midnight(tmp_path, redis_url, redis_client):
    with _client(tmp_path, redis_url, quota_scenes_per_day=5) as c:
        assert c.post("/v1/jobs", json=SPEC, headers=ALICE).status_code == 202  # 2 scenes
        assert c.post("/v1/jobs", json=SPEC, headers=ALICE).status_code == 202  # 4
        r = c.post("/v1/jobs", json=SPEC, headers=ALICE)  # 6 > 5
        assert r.status_code == 429
        assert r.json()["quota"] == "scenes_per_day" and r.json()["used"] == 4
        assert "asks for 2" in r.json()["detail"]
        assert 0 < int(r.headers["Retry-After"]) <= 86401
        assert int(r.headers["Retry-After"]) == pytest.approx(quotas.seconds_to_utc_midnight(), abs=5)
        # A job of one scene still fits.
        assert c.post("/v1/jobs", json={**SPEC, "images_per_category": 1}, headers=ALICE).status_code == 202
        assert quotas.scenes_today(redis_client, "alice") == 5


def test_stored_bytes_are_reserved_measured_and_given_back_on_deletion(tmp_path, redis_url, redis_client):
    est = quotas.job_bytes_estimate(2, 64)  # what a 2-scene 64 px job reserves before it is measured
    with _client(tmp_path, redis_url, quota_stored_bytes=est + est // 2) as c:
        a = c.post("/v1/jobs", json=SPEC, headers=ALICE).json()["job_id"]
        r = c.post("/v1/jobs", json=SPEC, headers=ALICE)
        assert r.status_code == 429 and r.json()["quota"] == "stored_bytes", r.text
        # The job ends having stored more than its estimate: the measurement replaces the reservation.
        c.post(f"/v1/jobs/{a}/cancel", headers=ALICE)
        c.rt.store.put_bytes(keys.image(a, "s00000"), b"x" * (2 * est))
        assert deletion.measure_due(c.rt) >= 1
        measured = quotas.usage(redis_client, "alice")[a]
        assert measured == quotas.measure_job(c.rt.store, a) and measured > 2 * est
        r = c.post("/v1/jobs", json=SPEC, headers=ALICE)
        assert r.status_code == 429 and r.json()["used"] == measured
        # What adds data without a reservation (a training, a version) is refused once the quota is used up.
        with pytest.raises(quotas.QuotaExceeded) as e:
            quotas.check_stored_bytes(redis_client, "alice", quotas.Limits(0, 0, est + est // 2))
        assert e.value.quota == "stored_bytes"
        quotas.check_stored_bytes(redis_client, "bob", quotas.Limits(0, 0, est + est // 2))
        # Deleting the job gives its bytes back at once.
        assert c.delete(f"/v1/jobs/{a}", headers=ALICE).status_code == 200
        assert quotas.stored_bytes(redis_client, "alice") == 0
        assert c.post("/v1/jobs", json=SPEC, headers=ALICE).status_code == 202


def test_a_failed_write_gives_the_reservation_back(tmp_path, redis_url, redis_client, monkeypatch):
    with _client(tmp_path, redis_url, raise_server_exceptions=False, quota_active_jobs=1) as c:
        def broken(*a, **k):
            raise OSError("disk full")

        monkeypatch.setattr(c.rt.tracker, "create", broken)
        r = c.post("/v1/jobs", json=SPEC, headers=ALICE)
        assert r.status_code >= 500
        assert quotas.active_jobs(redis_client, "alice") == set()
        assert quotas.scenes_today(redis_client, "alice") == 0 and quotas.stored_bytes(redis_client, "alice") == 0


def test_recount_rebuilds_the_counters_from_storage(tmp_path, redis_url, redis_client):
    with _client(tmp_path, redis_url) as c:
        a = c.post("/v1/jobs", json=SPEC, headers=ALICE).json()["job_id"]
        b = c.post("/v1/jobs", json=SPEC, headers=ALICE).json()["job_id"]
        c.post(f"/v1/jobs/{b}/cancel", headers=ALICE)
        c.rt.store.put_bytes(keys.image(b, "s00000"), b"y" * 1000)
        redis_client.flushdb()
        totals = quotas.recount(c.rt)
        assert quotas.active_jobs(redis_client, "alice") == {a}
        assert quotas.usage(redis_client, "alice")[b] == quotas.measure_job(c.rt.store, b)
        assert totals["alice"] == quotas.stored_bytes(redis_client, "alice") > 1000
        assert quotas.counted(redis_client)
