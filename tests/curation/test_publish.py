"""Publishing a reviewed version runs the same two steps as a job's curation (export per kept scene, then the
one assemble path): a version whose marks change no decision is byte for byte the job's dataset but for its
version notes; every version's manifest carries a SHA-256 per file and the seeds; asking again with the same
marks (even twenty times at once) gives the same version back and copies nothing."""

from __future__ import annotations

import hashlib
import json
import threading

from dreammask.services.api import reviewing
from dreammask.shared import keys
from dreammask.shared import review as rv
from dreammask.shared.schemas import CuratedScene, DatasetManifest

# Files that name their version (dataset id, version number, review counts); everything else must match
# (the COCO files but for their `info` header, which names the dataset).
VERSION_NOTES = {keys.CARD_JSON, keys.CARD_MD, keys.DECISIONS, keys.CONTACT_SHEET}
COCO = {keys.COCO_INSTANCES, keys.COCO_PANOPTIC}


def _mark(rt, job, sid, decision, instance_id=None):
    rec = rt.store.try_get_model(rv.review(job, sid), rv.SampleReview) or rv.SampleReview(job_id=job, scene_id=sid)
    rec.apply(rv.ReviewEvent(instance_id=instance_id, decision=decision, who="alice/abcd1234"))
    rt.store.put_json(rv.review(job, sid), rec)


def _files(store, dataset_id) -> dict[str, bytes]:
    prefix = keys.dataset_prefix(dataset_id)
    return {k[len(prefix):]: store.get_bytes(k) for k in store.list(prefix) if not k.endswith("manifest.json")}


def _finished(curation, **kw) -> tuple[str, list[CuratedScene]]:
    job = curation.job(12, **kw)
    curation.run()
    rt = curation.rt
    recs = [rt.store.get_model(keys.curated(job, sid), CuratedScene) for sid in rt.tracker.plan(job).scene_ids]
    return job, recs


def test_a_version_is_the_job_dataset_made_again_with_the_marks_applied(curation):
    rt = curation.rt
    job, recs = _finished(curation)
    kept = [r for r in recs if r.kept]
    # Accepting what the rules kept changes no decision: the dataset must come out as the job's.
    _mark(rt, job, kept[0].scene_id, "accept", kept[0].instances[0].instance_id)
    v2, created = reviewing.request_version(rt, job, "alice/abcd1234")
    assert created and v2.version == 2
    curation.run()
    first, second = _files(rt.store, keys.dataset_id_for_job(job)), _files(rt.store, v2.dataset_id)
    assert set(first) == set(second)
    differing = {path for path in first if first[path] != second[path]}
    assert differing <= VERSION_NOTES | COCO, differing
    for path in COCO:
        a, b = json.loads(first[path]), json.loads(second[path])
        assert a.pop("info")["description"] != b.pop("info")["description"] and a == b, path
    assert len(first) - len(differing) > 3 * len(kept)  # images, panoptic PNGs, label maps, YOLO labels ...

    # A rejected sample leaves the next version; its manifest is checksummed and seeded like version 1's.
    _mark(rt, job, kept[1].scene_id, "reject")
    v3, created = reviewing.request_version(rt, job, "alice/abcd1234", note="reject one")
    assert created and v3.version == 3
    curation.run()
    m = rt.store.get_model(keys.dataset_manifest(v3.dataset_id), DatasetManifest)
    files = _files(rt.store, v3.dataset_id)
    assert f"{keys.IMAGES_DIR}/{kept[1].scene_id}.png" not in files and m.images == len(kept) - 1
    assert set(m.checksums) == set(files)
    for path, data in files.items():
        assert m.checksums[path] == "sha256:" + hashlib.sha256(data).hexdigest(), path
    plan = rt.tracker.plan(job)
    assert m.job_seed == plan.job_seed and kept[1].scene_id not in m.scene_seeds
    assert m.scene_seeds == {r.scene_id: plan.scene(r.scene_id).seed for r in kept if r is not kept[1]}
    assert m.selection["version"] == 3 and m.selection["reviews"]["samples_rejected"] == 1
    card = rt.store.get_json(keys.dataset_file(v3.dataset_id, keys.CARD_JSON))
    assert card["version"] == 3 and card["first_version"] == keys.dataset_id_for_job(job)
    assert "## Version 3" in rt.store.get_bytes(keys.dataset_file(v3.dataset_id, keys.CARD_MD)).decode()


def test_a_version_is_made_from_the_marks_it_was_requested_with(curation):
    rt = curation.rt
    job, recs = _finished(curation)
    kept = [r for r in recs if r.kept]
    _mark(rt, job, kept[0].scene_id, "reject")
    v2, _ = reviewing.request_version(rt, job, "alice/abcd1234")
    _mark(rt, job, kept[1].scene_id, "reject")  # after the request, before its task runs
    curation.run()
    m = rt.store.get_model(keys.dataset_manifest(v2.dataset_id), DatasetManifest)
    assert kept[0].scene_id not in m.scene_seeds and kept[1].scene_id in m.scene_seeds


def test_unchanged_marks_make_no_second_copy(curation):
    rt = curation.rt
    job, recs = _finished(curation)
    kept = [r for r in recs if r.kept]
    # No marks at all: version 1 is that content.
    v, created = reviewing.request_version(rt, job, "alice/abcd1234")
    assert not created and v.version == 1 and v.dataset_id == keys.dataset_id_for_job(job)
    assert rv.list_versions(rt.store, job) == []

    _mark(rt, job, kept[0].scene_id, "reject")
    results, errors = [], []

    def publish():
        try:
            results.append(reviewing.request_version(rt, job, "bob/01234567"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=publish) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {v.version for v, _ in results} == {2} and sum(created for _, created in results) == 1
    assert len(rt.dispatcher.pending) == 1  # one publish task queued
    curation.run()
    # Asked again after it was published, and with the same marks made by someone else: the same version.
    _mark(rt, job, kept[0].scene_id, "clear")
    _mark(rt, job, kept[0].scene_id, "reject")
    again, created = reviewing.request_version(rt, job, "carol/89abcdef")
    assert not created and again.version == 2 and again.state == "published"
    assert [v.version for v in rv.list_versions(rt.store, job)] == [2]
    assert {k.split("/")[1] for k in rt.store.list("datasets/")} == {keys.dataset_id_for_job(job), again.dataset_id}

    # A version whose publishing failed is published again under its number, not copied under a new one.
    record = rt.store.get_model(rv.version(job, 2), rv.DatasetVersion)
    record.state, record.error = "failed", "RuntimeError: disk full"
    rt.store.put_json(rv.version(job, 2), record)
    retry, created = reviewing.request_version(rt, job, "alice/abcd1234")
    assert created and retry.version == 2 and retry.state == "pending"
