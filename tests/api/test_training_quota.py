"""The per-tenant quota of unfinished trainings (each holds a GPU): concurrent submissions never take more
slots than the quota, a training over it is a 429 naming it with Retry-After, a training that turns terminal
(succeeded, failed, cancelled) or is deleted frees its slot, a slot whose training ended without giving it
back is reclaimed, and the supervisor's recount rebuilds the slots from storage."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from dreammask.services.api.main import create_app
from dreammask.shared import deletion, quotas
from dreammask.shared.runtime import build_runtime
from dreammask.shared.schemas import utcnow
from dreammask.shared.settings import Settings
from dreammask.trainer.service.record import read_status, transition, write_status
from dreammask.trainer.service.schemas import TrainingState

KEYS = {"key-alice": "alice", "key-bob": "bob"}
ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}
# The toy world needs no prepared files and the tiny model no weights: the API accepts it anywhere.
TRAINING = {"real_datasets": ["toy_world_train"], "iterations": 2, "tiny": True}


def _client(tmp_path, redis_url, **quota):
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", api_keys=KEYS,
                 public_base_url="http://api.test", **quota)
    rt = build_runtime(s)
    client = TestClient(create_app(s, rt), base_url="http://api.test")
    client.rt = rt
    return client


def _submit(c, headers=ALICE):
    return c.post("/v1/trainings", json=TRAINING, headers=headers)


def _ended(c, tid: str, state: TrainingState) -> None:
    """What a worker writes when the training ends, without the release the worker's task adds."""
    transition(c.rt.store, read_status(c.rt.store, tid), state)


def test_the_default_is_two_trainings_and_a_negative_quota_is_refused():
    assert Settings().quota_active_trainings == 2
    assert quotas.Limits.from_settings(Settings(quota_active_trainings=5)).active_trainings == 5
    with pytest.raises(ValueError, match="quota_active_trainings"):
        Settings(quota_active_trainings=-1)


def test_concurrent_training_submits_take_exactly_the_quota(tmp_path, redis_url, redis_client, all_at_once):
    with _client(tmp_path, redis_url, quota_active_trainings=3) as c:
        responses = all_at_once(lambda _: _submit(c), 12)
        codes = sorted(r.status_code for r in responses)
        assert codes == [202] * 3 + [429] * 9, codes
        refused = next(r for r in responses if r.status_code == 429)
        body = refused.json()
        assert body["quota"] == "active_trainings" and body["limit"] == 3 and body["used"] == 3
        detail = body["detail"]
        assert "DREAMMASK_QUOTA_ACTIVE_TRAININGS" in detail
        assert "cancel" in detail and "DELETE /v1/trainings/" in detail and "wait" in detail
        assert refused.headers["Retry-After"] == str(quotas.TRAINING_RETRY_S) == str(body["retry_after_s"])
        # Exactly the accepted trainings exist, and hold the slots; the refused left nothing behind.
        accepted = {r.json()["training_id"] for r in responses if r.status_code == 202}
        listed = {t["training_id"] for t in c.get("/v1/trainings", headers=ALICE).json()["items"]}
        assert listed == accepted == quotas.active_trainings(redis_client, "alice")
        assert redis_client.llen("training") == 3
        # Another tenant has its own slots; an evaluation takes one like a training.
        bobs = _submit(c, BOB).json()["training_id"]
        for tid in (bobs, *accepted):
            c.rt.store.put_bytes(f"trainings/{tid}/last_checkpoint", b"model_0000002.pth")
        r = c.post("/v1/trainings/evaluations", headers=ALICE,
                   json={"weights": sorted(accepted)[0], "eval_datasets": ["toy_world_val"]})
        assert r.status_code == 429 and r.json()["quota"] == "active_trainings", r.text
        r = c.post("/v1/trainings/evaluations", headers=BOB, json={"weights": bobs, "eval_datasets": ["toy_world_val"]})
        assert r.status_code == 202, r.text
        assert quotas.active_trainings(redis_client, "bob") == {bobs, r.json()["training_id"]}
        assert len(quotas.active_trainings(redis_client, "alice")) == 3


def test_terminal_states_free_the_slot_and_resume_takes_one(tmp_path, redis_url, redis_client, monkeypatch):
    with _client(tmp_path, redis_url, quota_active_trainings=1) as c:
        a = _submit(c).json()["training_id"]
        assert _submit(c).status_code == 429
        # Cancelled while queued: freed at once.
        assert c.post(f"/v1/trainings/{a}/cancel", headers=ALICE).json()["state"] == "cancelled"
        assert quotas.active_trainings(redis_client, "alice") == set()
        b = _submit(c).json()["training_id"]
        # Resuming needs a slot again: refused while b holds it, and a stays cancelled.
        r = c.post(f"/v1/trainings/{a}/resume", headers=ALICE)
        assert r.status_code == 429 and r.json()["quota"] == "active_trainings"
        assert c.get(f"/v1/trainings/{a}", headers=ALICE).json()["state"] == "cancelled"

        # The worker's task gives the slot back when the run ends, even when the run failed.
        from dreammask.shared import settings as settings_module
        from dreammask.shared import storage as storage_module
        from dreammask.trainer.service import runner, tasks

        def failing_run(store, training_id, _settings=None):
            st = read_status(store, training_id)
            st.error = "RuntimeError: CUDA out of memory"
            transition(store, st, TrainingState.failed, st.error)
            raise RuntimeError("CUDA out of memory")

        monkeypatch.setattr(runner, "run_training_job", failing_run)
        monkeypatch.setattr(storage_module, "store_from_settings", lambda *a, **k: c.rt.store)
        monkeypatch.setattr(settings_module, "get_settings", lambda: c.rt.settings)
        with pytest.raises(RuntimeError):
            tasks.run(b)
        assert quotas.active_trainings(redis_client, "alice") == set()
        r = c.post(f"/v1/trainings/{a}/resume", headers=ALICE)
        assert r.status_code == 202 and quotas.active_trainings(redis_client, "alice") == {a}

        # A training lost by its worker (no heartbeat) is cancelled at once, which frees its slot.
        st = read_status(c.rt.store, a)
        st.state = TrainingState.running
        write_status(c.rt.store, st)
        st.updated_at = utcnow() - timedelta(hours=2)
        c.rt.store.put_json(f"trainings/{a}/status.json", st)
        assert c.post(f"/v1/trainings/{a}/cancel", headers=ALICE).json()["state"] == "cancelled"
        assert quotas.active_trainings(redis_client, "alice") == set()


def test_the_in_process_runner_frees_the_slot_of_a_finished_training(tmp_path, redis_url, redis_client,
                                                                    monkeypatch):
    from dreammask.services.cli import inprocess
    from dreammask.trainer.service import runner

    def succeed(store, training_id, _settings=None):
        _ended(c, training_id, TrainingState.succeeded)
        return {}

    with _client(tmp_path, redis_url, quota_active_trainings=1) as c:
        a = _submit(c).json()["training_id"]
        monkeypatch.setattr(runner, "run_training_job", succeed)
        inprocess._train(None, c.rt, a)
        assert quotas.active_trainings(redis_client, "alice") == set()


def test_a_training_that_could_not_be_queued_frees_its_slot(tmp_path, redis_url, redis_client, monkeypatch):
    with _client(tmp_path, redis_url, quota_active_trainings=1) as c:
        def broker_down(*a, **k):
            raise ConnectionError("broker unavailable")

        monkeypatch.setattr(c.rt.dispatcher, "send", broker_down)
        r = _submit(c)
        assert r.status_code == 503 and "resume" in r.json()["detail"]
        assert quotas.active_trainings(redis_client, "alice") == set()
        monkeypatch.undo()
        assert _submit(c).status_code == 202


def test_deletion_frees_the_slot(tmp_path, redis_url, redis_client):
    with _client(tmp_path, redis_url, quota_active_trainings=1) as c:
        # A queued training holds no GPU yet: deleting it frees its slot at once.
        a = _submit(c).json()["training_id"]
        r = c.delete(f"/v1/trainings/{a}", headers=ALICE)
        assert r.status_code == 202 and r.json()["pending"] is True
        assert quotas.active_trainings(redis_client, "alice") == set()

        # A running one keeps its slot until it stopped; the sweep that deletes it then frees it.
        b = _submit(c).json()["training_id"]
        st = read_status(c.rt.store, b)
        transition(c.rt.store, st, TrainingState.running)
        assert c.delete(f"/v1/trainings/{b}", headers=ALICE).status_code == 202
        assert quotas.active_trainings(redis_client, "alice") == {b}
        deletion.sweep_deletions(c.rt)
        assert quotas.active_trainings(redis_client, "alice") == {b}
        # It stopped without giving its slot back (the worker died after writing its status).
        _ended(c, b, TrainingState.cancelled)
        deletion.sweep_deletions(c.rt)
        assert quotas.active_trainings(redis_client, "alice") == set()

        # A lost one (stale heartbeat) is deleted at once, and its slot with it.
        d = _submit(c).json()["training_id"]
        st = read_status(c.rt.store, d)
        st.state, st.updated_at = TrainingState.running, utcnow() - timedelta(hours=2)
        c.rt.store.put_json(f"trainings/{d}/status.json", st)
        r = c.delete(f"/v1/trainings/{d}", headers=ALICE)
        assert r.status_code == 200, r.text
        assert quotas.active_trainings(redis_client, "alice") == set()
        assert _submit(c).status_code == 202


def test_a_slot_not_given_back_is_reclaimed_when_the_quota_is_full(tmp_path, redis_url, redis_client):
    with _client(tmp_path, redis_url, quota_active_trainings=1) as c:
        a = _submit(c).json()["training_id"]
        _ended(c, a, TrainingState.succeeded)  # the worker died before its release
        assert quotas.active_trainings(redis_client, "alice") == {a}
        b = _submit(c)
        assert b.status_code == 202, b.text
        assert quotas.active_trainings(redis_client, "alice") == {b.json()["training_id"]}

    # A slot whose record is not written yet is being submitted: kept for the grace time, then reclaimed.
    lim = quotas.Limits(0, 0, 0, 1)
    redis_client.flushdb()
    now = 1_000_000.0
    quotas.reserve_training(redis_client, "carol", "tr-writing", lim, store=c.rt.store, now=now)
    with pytest.raises(quotas.QuotaExceeded) as e:
        quotas.reserve_training(redis_client, "carol", "tr-next", lim, store=c.rt.store, now=now + 1)
    assert e.value.quota == "active_trainings" and e.value.used == 1
    quotas.reserve_training(redis_client, "carol", "tr-next", lim, store=c.rt.store,
                            now=now + quotas.TRAINING_SLOT_GRACE_S + 1)
    assert quotas.active_trainings(redis_client, "carol") == {"tr-next"}


def test_reservations_are_atomic_and_zero_is_unlimited(redis_client, all_at_once):
    lim = quotas.Limits(0, 0, 0, 4)

    def take(i):
        try:
            quotas.reserve_training(redis_client, "alice", f"tr-{i:03d}", lim)
            return "ok"
        except quotas.QuotaExceeded as e:
            return e.quota

    results = all_at_once(take, 30)
    assert results.count("ok") == 4 and results.count("active_trainings") == 26
    # The same training again (a redelivered loop step) keeps its slot without taking a second.
    held = sorted(quotas.active_trainings(redis_client, "alice"))[0]
    assert quotas.reserve_training(redis_client, "alice", held, lim) is False
    unlimited = quotas.Limits(0, 0, 0, 0)
    for i in range(50):
        quotas.reserve_training(redis_client, "bob", f"tr-{i:03d}", unlimited)
    assert len(quotas.active_trainings(redis_client, "bob")) == 50


def test_recount_rebuilds_the_training_slots(tmp_path, redis_url, redis_client):
    with _client(tmp_path, redis_url) as c:
        a = _submit(c).json()["training_id"]
        b = _submit(c).json()["training_id"]
        _ended(c, b, TrainingState.failed)
        redis_client.flushdb()
        quotas.recount(c.rt)
        assert quotas.active_trainings(redis_client, "alice") == {a}
        assert _submit(c).status_code == 202
        r = _submit(c)
        assert r.status_code == 429 and r.json()["used"] == 2
