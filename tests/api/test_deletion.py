"""Deletion and retention on real stage outputs (every stage run in this process): a deleted job, dataset,
version or training leaves nothing behind in storage or Redis, and every other job's and tenant's files
keep their exact bytes (SHA-256 before and after). A cancel is final: a batch that was writing when the
job was cancelled writes nothing more."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from dreammask.services.api.main import create_app
from dreammask.services.cli.inprocess import in_process_dispatcher, run_pending
from dreammask.shared import deletion, keys, quotas
from dreammask.shared import review as rv
from dreammask.shared.runtime import build_runtime, set_runtime
from dreammask.shared.schemas import JobState, JobStatus, utcnow
from dreammask.shared.settings import Settings

KEYS = {"key-alice": "alice", "key-bob": "bob"}
ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}
SPEC = {"train_categories": ["person", "dog", "car", "building", "sky", "road"], "num_novel": 1,
        "images_per_category": 2, "image_size": 64, "seed": 3}


@pytest.fixture()
def plat(tmp_path, redis_url, redis_client, shared_cache_dir):
    """The API (plain store) and the stages (the workers' guarded store) on one in-process dispatcher."""
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", cache_dir=shared_cache_dir,
                 api_keys=KEYS, public_base_url="http://api.test")
    d = in_process_dispatcher()
    api_rt = build_runtime(s, dispatcher=d)
    worker_rt = build_runtime(s, dispatcher=d, guard_cancelled=True)
    set_runtime(worker_rt)
    with TestClient(create_app(s, api_rt), base_url="http://api.test") as c:
        c.rt, c.wrt, c.r = api_rt, worker_rt, redis_client
        c.run = lambda until=None: run_pending(worker_rt, until)
        yield c
    set_runtime(None)


def submit(c, headers, **over) -> str:
    r = c.post("/v1/jobs", json={**SPEC, **over}, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def publish_a_reviewed_version(c, job_id: str, headers, note: str | None = None) -> None:
    """A reviewer rejects the first annotated scene, then publishes: a new version (202), since publishing
    marks that did not change returns the version that holds them."""
    scene = next(iter(sorted(k.rsplit("/", 1)[1].split(".")[0] for k in c.rt.store.list(f"jobs/{job_id}/annotations/"))))
    r = c.post(f"/v1/jobs/{job_id}/reviews", json={"scene_id": scene, "instance_id": None, "decision": "reject"},
               headers=headers)
    assert r.status_code == 201, r.text
    body = {"note": note} if note else {}
    assert c.post(f"/v1/datasets/ds-{job_id}/versions", json=body, headers=headers).status_code == 202


def checksums(store) -> dict[str, str]:
    return {k: hashlib.sha256(store.get_bytes(k)).hexdigest() for k in store.list("")}


def belongs_to_job(key: str, job_id: str) -> bool:
    return (key.startswith((f"jobs/{job_id}/", f"datasets/ds-{job_id}/", f"datasets/ds-{job_id}-v"))
            or key.endswith(f"/jobs/{job_id}"))


def redis_keys_naming(r, text: str) -> list[str]:
    return sorted(k.decode() for k in r.keys(f"*{text}*"))


def test_deleting_a_job_removes_all_of_it_and_nothing_of_anyone_else(plat):
    a1, a2, b1 = submit(plat, ALICE), submit(plat, ALICE, seed=4), submit(plat, BOB, seed=5)
    plat.run()
    for j, h in ((a1, ALICE), (a2, ALICE), (b1, BOB)):
        assert plat.get(f"/v1/jobs/{j}", headers=h).json()["state"] == "succeeded"
    publish_a_reviewed_version(plat, a1, ALICE, note="v2")
    plat.run()
    before = checksums(plat.rt.store)
    mine = {k for k in before if belongs_to_job(k, a1)}
    assert any(k.startswith(f"datasets/ds-{a1}-v2/") for k in mine) and any(k.startswith("jobs/") for k in mine)

    assert plat.delete(f"/v1/jobs/{a1}", headers=BOB).status_code == 404  # another tenant's: missing
    assert checksums(plat.rt.store) == before
    r = plat.delete(f"/v1/jobs/{a1}", headers=ALICE)
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] == "job" and r.json()["objects"] == len(mine) and not r.json()["cancelled"]

    after = checksums(plat.rt.store)
    assert after == {k: v for k, v in before.items() if k not in mine}  # every other byte as it was
    assert plat.get(f"/v1/jobs/{a1}", headers=ALICE).status_code == 404
    assert plat.get(f"/v1/datasets/ds-{a1}", headers=ALICE).status_code == 404
    assert plat.get(f"/v1/datasets/ds-{a1}-v2", headers=ALICE).status_code == 404
    assert [j["job_id"] for j in plat.get("/v1/jobs", headers=ALICE).json()["items"]] == [a2]
    assert plat.delete(f"/v1/jobs/{a1}", headers=ALICE).status_code == 404
    # Redis keeps only the cancel flag (with a TTL), which stops any message of the job still around.
    flag = f"dreammask:job:{a1}:cancelled"
    assert redis_keys_naming(plat.r, a1) == [flag] and 0 < plat.r.ttl(flag)
    assert a1 not in quotas.usage(plat.r, "alice")
    # A message of the job delivered now does nothing.
    plat.rt.dispatcher.send("dreammask.annotation.annotate", a1, ["s00000"])
    plat.run()
    assert checksums(plat.rt.store) == after


def test_what_lands_after_a_deletion_is_removed_and_counted(plat):
    a1, b1 = submit(plat, ALICE), submit(plat, BOB)
    plat.run(until="dreammask.synthesis.render")
    others = {k: v for k, v in checksums(plat.rt.store).items() if not belongs_to_job(k, a1)}
    plat.delete(f"/v1/jobs/{a1}", headers=ALICE)
    # A write that passed the cancel check before the deletion, landing after it:
    plat.rt.store.put_bytes(keys.image(a1, "s00001"), b"late")
    plat.rt.store.put_bytes(f"datasets/ds-{a1}/images/s00001.png", b"late")
    found = deletion.sweep_deletions(plat.rt)
    assert found == {f"job|{a1}": 2} and int(plat.r.get(deletion.LANDED_KEY)) == 2
    assert not any(belongs_to_job(k, a1) for k in plat.rt.store.list(""))
    assert checksums(plat.rt.store) == others
    assert plat.get(f"/v1/jobs/{b1}", headers=BOB).json()["state"] == "running"
    # The follow-up ends once no task of the job can still run.
    entry = deletion.pending_deletions(plat.r)[f"job|{a1}"]
    deletion.sweep_deletions(plat.rt, now=entry["until"] + 1)
    assert deletion.pending_deletions(plat.r) == {}


def test_deleting_a_running_job_cancels_it_first(plat):
    a1 = submit(plat, ALICE)
    plat.run(until="dreammask.synthesis.render")  # association and layouts done, renders queued
    r = plat.delete(f"/v1/jobs/{a1}", headers=ALICE)
    assert r.status_code == 200 and r.json()["cancelled"] is True
    plat.run()  # the queued renders arrive: nothing lands
    assert not any(belongs_to_job(k, a1) for k in plat.rt.store.list(""))
    assert quotas.active_jobs(plat.r, "alice") == set()


def test_datasets_and_versions_are_deleted_one_by_one(plat):
    a1, b1 = submit(plat, ALICE), submit(plat, BOB, seed=9)
    plat.run()
    publish_a_reviewed_version(plat, a1, ALICE)
    plat.run()
    before = checksums(plat.rt.store)
    v2 = {k for k in before if k.startswith(f"datasets/ds-{a1}-v2/")} | {rv.version(a1, 2)}
    assert plat.delete(f"/v1/datasets/ds-{a1}-v2", headers=BOB).status_code == 404
    r = plat.delete(f"/v1/datasets/ds-{a1}/versions/2", headers=ALICE)
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["objects"] == len(v2)
    assert checksums(plat.rt.store) == {k: v for k, v in before.items() if k not in v2}
    assert [v["version"] for v in plat.get(f"/v1/datasets/ds-{a1}/versions", headers=ALICE).json()["items"]] == [1]
    assert plat.delete(f"/v1/datasets/ds-{a1}/versions/2", headers=ALICE).status_code == 404

    # A version still being assembled cannot be deleted.
    publish_a_reviewed_version(plat, a1, ALICE)
    r = plat.delete(f"/v1/datasets/ds-{a1}/versions/3", headers=ALICE)
    assert r.status_code == 409 and "still being assembled" in r.json()["detail"]
    plat.run()

    # Version 1, the curated dataset: gone, the job and its review stay.
    before = checksums(plat.rt.store)
    v1 = {k for k in before if k.startswith(f"datasets/ds-{a1}/")}
    assert plat.delete(f"/v1/datasets/ds-{a1}", headers=ALICE).status_code == 200
    after = checksums(plat.rt.store)
    status = keys.status(a1)  # the job's record no longer names the dataset: the one other change
    assert after[status] != before[status]
    assert {k: v for k, v in after.items() if k != status} == {
        k: v for k, v in before.items() if k not in v1 and k != status}
    job = plat.get(f"/v1/jobs/{a1}", headers=ALICE).json()
    assert job["state"] == "succeeded" and job["dataset_id"] is None
    assert plat.get(f"/v1/datasets/ds-{b1}", headers=BOB).status_code == 200


def test_a_cancel_is_final_for_a_batch_that_is_writing(plat, monkeypatch):
    a1 = submit(plat, ALICE, images_per_category=4)
    plat.run(until="dreammask.annotation.annotate")
    inner = plat.wrt.store.inner
    real_put = inner.put_bytes
    written = []

    def put_then_cancel(key, data, content_type="application/octet-stream"):
        real_put(key, data, content_type)
        if "/annotations/" in key:
            written.append(key)
            if len(written) == 1:  # the client cancels while the batch is writing its outputs
                assert plat.post(f"/v1/jobs/{a1}/cancel", headers=ALICE).status_code == 202

    monkeypatch.setattr(inner, "put_bytes", put_then_cancel)
    plat.run()
    annotations = list(plat.rt.store.list(keys.job_prefix(a1) + "annotations/"))
    assert annotations == written and len(annotations) == 1  # nothing landed after the cancel
    assert list(plat.rt.store.list(keys.job_prefix(a1) + "failures/")) == []
    assert list(plat.rt.store.list(keys.job_prefix(a1) + "curated/")) == []
    view = plat.get(f"/v1/jobs/{a1}", headers=ALICE).json()
    assert view["state"] == "cancelled" and view["stages"]["annotation"]["done"] == 0


def _age_status(store, job_id: str, days: float) -> None:
    st = store.get_model(keys.status(job_id), JobStatus)
    st.updated_at = utcnow() - timedelta(days=days)
    store.put_json(keys.status(job_id), st)


def test_retention_deletes_old_cancelled_and_failed_jobs_and_stuck_versions(plat):
    old_cancelled, new_cancelled, old_failed = (submit(plat, ALICE, seed=i) for i in range(3))
    for j in (old_cancelled, new_cancelled):
        plat.post(f"/v1/jobs/{j}/cancel", headers=ALICE)
    plat.rt.tracker.transition(old_failed, JobState.failed, "broken")
    plat.rt.dispatcher.pending.clear()
    done = submit(plat, BOB, seed=11)
    plat.run()
    _age_status(plat.rt.store, old_cancelled, 31)
    _age_status(plat.rt.store, new_cancelled, 29)
    _age_status(plat.rt.store, old_failed, 40)
    _age_status(plat.rt.store, done, 400)  # succeeded jobs are kept however old
    stuck = rv.DatasetVersion(job_id=done, version=2, dataset_id=rv.version_dataset_id(done, 2), who="x",
                              created_at=utcnow() - timedelta(days=8))
    plat.rt.store.put_json(rv.version(done, 2), stuck)
    plat.rt.store.put_bytes(f"datasets/{stuck.dataset_id}/images/s00000.png", b"partial")
    out = deletion.apply_retention(plat.rt, force=True)
    assert sorted(out["jobs"]) == sorted([old_cancelled, old_failed])
    assert out["versions"] == [stuck.dataset_id]
    left = set(plat.rt.tracker.all_job_ids())
    assert left == {new_cancelled, done}
    assert plat.rt.store.try_get_model(rv.version(done, 2), rv.DatasetVersion) is None
    assert plat.get(f"/v1/datasets/ds-{done}", headers=BOB).status_code == 200
    # At most once per interval, across supervisors: the first unforced run takes the turn, the next waits.
    _age_status(plat.rt.store, new_cancelled, 31)
    assert deletion.apply_retention(plat.rt)["jobs"] == [new_cancelled]
    assert deletion.apply_retention(plat.rt) == {"jobs": [], "versions": []}


def test_trainings_are_deleted_and_a_running_one_after_it_stopped(plat):
    from dreammask.trainer.service.record import create_training, read_status, transition
    from dreammask.trainer.service.schemas import TrainingSpec, TrainingState, cancel_key

    spec = TrainingSpec(datasets=["ds-x"], tiny=True, iterations=2)
    done = create_training(plat.rt.store, "alice", spec).training_id
    st = read_status(plat.rt.store, done)
    transition(plat.rt.store, st, TrainingState.succeeded)
    running = create_training(plat.rt.store, "alice", spec).training_id
    theirs = create_training(plat.rt.store, "bob", spec).training_id
    before = checksums(plat.rt.store)

    assert plat.delete(f"/v1/trainings/{done}", headers=BOB).status_code == 404
    r = plat.delete(f"/v1/trainings/{done}", headers=ALICE)
    assert r.status_code == 200 and r.json()["objects"] >= 3
    assert not any(done in k for k in plat.rt.store.list(""))

    r = plat.delete(f"/v1/trainings/{running}", headers=ALICE)
    assert r.status_code == 202 and r.json()["pending"] is True
    assert plat.rt.store.exists(cancel_key(running))  # the trainer stops at its next status check
    deletion.sweep_deletions(plat.rt)
    assert plat.rt.store.exists(keys.training_prefix(running) + "status.json")  # still running: kept
    st = read_status(plat.rt.store, running)
    transition(plat.rt.store, st, TrainingState.cancelled, "cancelled at iteration 1")
    deletion.sweep_deletions(plat.rt)
    assert not any(running in k for k in plat.rt.store.list(""))
    assert {k: v for k, v in checksums(plat.rt.store).items()} == {
        k: v for k, v in before.items() if done not in k and running not in k}
    assert plat.get(f"/v1/trainings/{theirs}", headers=BOB).status_code == 200


def test_a_deletion_in_progress_is_left_to_its_process_and_an_interrupted_one_finished(plat):
    store, r = plat.rt.store, plat.r
    store.put_bytes("jobs/jdead/images/s00000.png", b"x")
    store.put_bytes("jobs/jother/images/s00000.png", b"y")
    deletion._register(r, "job", "jdead", "alice", ["jobs/jdead/"], [], until=1e12)
    entry = deletion.pending_deletions(r)["job|jdead"]
    # Still being deleted by the API process: the supervisor neither deletes nor counts.
    assert deletion.sweep_deletions(plat.rt, now=entry["started"] + 1) == {}
    assert store.exists("jobs/jdead/images/s00000.png")
    # The process died half-way: the supervisor finishes it; what it removes had not landed afterwards.
    assert deletion.sweep_deletions(plat.rt, now=entry["started"] + deletion.FIRST_PASS_TIMEOUT_S + 1) == {}
    assert not store.exists("jobs/jdead/images/s00000.png") and r.get(deletion.LANDED_KEY) is None
    assert store.exists("jobs/jother/images/s00000.png")


def _publish_marks(c, job_id: str, scene: str, decision: str):
    r = c.post(f"/v1/jobs/{job_id}/reviews", json={"scene_id": scene, "instance_id": None, "decision": decision},
               headers=ALICE)
    assert r.status_code == 201, r.text
    return c.post(f"/v1/datasets/ds-{job_id}/versions", json={}, headers=ALICE)


def test_publishing_after_version_1_is_deleted_gives_new_numbers_never_reused(plat):
    a1 = submit(plat, ALICE)
    plat.run()
    scenes = sorted(k.rsplit("/", 1)[1].split(".")[0] for k in plat.rt.store.list(f"jobs/{a1}/annotations/"))
    assert _publish_marks(plat, a1, scenes[0], "reject").json()["version"] == 2
    plat.run()
    v2_files = checksums(plat.rt.store)
    v2_files = {k: v for k, v in v2_files.items() if k.startswith(f"datasets/ds-{a1}-v2/")}
    assert plat.delete(f"/v1/datasets/ds-{a1}", headers=ALICE).status_code == 200

    # Version 1's id still names the job: its versions are listed, and the same marks give version 2 back.
    r = plat.get(f"/v1/datasets/ds-{a1}/versions", headers=ALICE)
    assert r.status_code == 200 and [v["version"] for v in r.json()["items"]] == [2], r.text
    r = plat.post(f"/v1/datasets/ds-{a1}/versions", json={}, headers=ALICE)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    # No marks left: the curated content again, as a new version (version 1 is gone), not a 500.
    r = _publish_marks(plat, a1, scenes[0], "clear")
    assert r.status_code == 202 and r.json()["version"] == 3, r.text
    plat.run()
    assert plat.get(f"/v1/datasets/ds-{a1}-v3", headers=ALICE).status_code == 200
    # Deleted numbers are not handed out again, even when the record of the last number is lost.
    for n in (3, 2):
        assert plat.delete(f"/v1/datasets/ds-{a1}/versions/{n}", headers=ALICE).status_code == 200
    plat.rt.store.delete(f"jobs/{a1}/last-version.json")
    r = _publish_marks(plat, a1, scenes[-1], "reject")
    assert r.status_code == 202 and r.json()["version"] == 4, r.text
    plat.run()
    items = plat.get(f"/v1/datasets/ds-{a1}-v4/versions", headers=ALICE).json()["items"]
    assert [(v["version"], v["state"]) for v in items] == [(4, "published")]
    # Nothing was overwritten: version 2's files were deleted with it, none reappeared under its id.
    assert v2_files and not any(k.startswith(f"datasets/ds-{a1}-v2/") for k in plat.rt.store.list("datasets/"))
    # Another tenant cannot use a deleted version 1's id to reach the job.
    assert plat.get(f"/v1/datasets/ds-{a1}/versions", headers=BOB).status_code == 404
    assert plat.post(f"/v1/datasets/ds-{a1}/versions", json={}, headers=BOB).status_code == 404


def test_versions_count_in_the_stored_bytes_quota(plat):
    a1 = submit(plat, ALICE)
    plat.run()
    deletion.measure_due(plat.rt)
    job_bytes = quotas.stored_bytes(plat.r, "alice")
    spec = plat.rt.tracker.spec(a1).spec
    estimate = quotas.version_bytes_estimate(spec.num_scenes, spec.image_size)
    scenes = sorted(k.rsplit("/", 1)[1].split(".")[0] for k in plat.rt.store.list(f"jobs/{a1}/annotations/"))

    # The request reserves the version's estimated bytes at once...
    assert _publish_marks(plat, a1, scenes[0], "reject").status_code == 202
    assert quotas.stored_bytes(plat.r, "alice") == job_bytes + estimate
    # ...and once it is assembled the supervisor measures it: its dataset's bytes are the tenant's.
    plat.run()
    assert deletion.measure_due(plat.rt) >= 1
    v2 = quotas.measure_prefixes(plat.rt.store, [keys.dataset_prefix(f"ds-{a1}-v2")])
    # (the job's folder grew a little too: the review, the version's record and its marks)
    assert v2 > 0 and quotas.stored_bytes(plat.r, "alice") == quotas.measure_job(plat.rt.store, a1) >= job_bytes + v2

    # A publish that would not fit is refused with 429, naming the quota and what to do; nothing is made.
    plat.rt.settings.quota_stored_bytes = quotas.stored_bytes(plat.r, "alice") + estimate - 1
    r = _publish_marks(plat, a1, scenes[-1], "reject")
    assert r.status_code == 429 and r.json()["quota"] == "stored_bytes", r.text
    assert "delete" in r.json()["detail"] and "DREAMMASK_QUOTA_STORED_BYTES" in r.json()["detail"]
    assert int(r.headers["Retry-After"]) > 0
    assert [v["version"] for v in plat.get(f"/v1/datasets/ds-{a1}/versions", headers=ALICE).json()["items"]] == [1, 2]
    # Deleting version 2 gives its bytes back (measured again), and the publish then fits.
    assert plat.delete(f"/v1/datasets/ds-{a1}/versions/2", headers=ALICE).status_code == 200
    deletion.measure_due(plat.rt)
    assert quotas.stored_bytes(plat.r, "alice") == quotas.measure_job(plat.rt.store, a1) < job_bytes + v2
    assert plat.post(f"/v1/datasets/ds-{a1}/versions", json={}, headers=ALICE).status_code == 202
