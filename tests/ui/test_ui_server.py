"""The review UI and the review API without a browser: sessions, CSRF, tenants, the sample index, publish."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from dreammask.shared import keys
from dreammask.shared import review as rv
from dreammask.shared.masks import decode_rle
from dreammask.shared.schemas import SceneAnnotation
from dreammask.shared.storage import LocalObjectStore

ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}


def login(client, key: str):
    form = client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    return client.post("/ui/login", data={"api_key": key, "csrf_token": token, "next": "/ui/jobs"},
                       follow_redirects=False)


def page_csrf(html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)


def test_without_a_session_every_page_is_the_login_page(ui, curated_job):
    job_id = curated_job["job_id"]
    for path in ("/ui/jobs", f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/samples", f"/ui/jobs/{job_id}/plots",
                 f"/ui/datasets/{curated_job['dataset_id']}", f"/ui/jobs/{job_id}/thumbs/s00000.jpg"):
        r = ui.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next="), path
        r = ui.get(path)
        assert r.status_code == 200 and 'id="login-form"' in r.text
        # No data: the job id appears only as where to go after logging in.
        without_next = re.sub(r'name="next" value="[^"]*"', "", r.text)
        assert job_id not in without_next and 'class="tile' not in r.text and "Novel categories" not in r.text


def test_login_sets_a_strict_httponly_cookie_and_a_wrong_key_is_refused(ui):
    r = login(ui, "not-a-key")
    assert r.status_code == 303 and "error=" in r.headers["location"]
    assert "dm_session" not in ui.cookies
    r = login(ui, "key-alice")
    assert r.status_code == 303 and r.headers["location"] == "/ui/jobs"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("dm_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "key-alice" not in cookie
    page = ui.get("/ui/jobs")
    assert page.status_code == 200 and "alice/" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_login_without_its_csrf_token_is_refused(ui):
    ui.get("/ui/login")
    r = ui.post("/ui/login", data={"api_key": "key-alice", "csrf_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403 and "dm_session" not in ui.cookies


def test_state_changes_without_csrf_are_refused_and_change_nothing(ui, curated_job):
    job_id, ds = curated_job["job_id"], curated_job["dataset_id"]
    login(ui, "key-alice")
    body = {"scene_id": "s00000", "decision": "reject"}
    assert ui.post(f"/ui/jobs/{job_id}/reviews", json=body).status_code == 403
    assert ui.post(f"/ui/jobs/{job_id}/reviews", json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert ui.post(f"/ui/datasets/{ds}/versions", data={"note": "x"}).status_code == 403
    assert ui.post("/ui/logout", data={}).status_code == 403
    assert list(ui.rt.store.list(rv.reviews_prefix(job_id))) == []
    assert list(ui.rt.store.list(rv.versions_prefix(job_id))) == []
    assert ui.get("/ui/jobs").status_code == 200  # still logged in
    token = page_csrf(ui.get("/ui/jobs").text)
    r = ui.post(f"/ui/jobs/{job_id}/reviews", json=body, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["sample"]["decision"] == "reject"
    r = ui.post("/ui/logout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert ui.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_another_tenants_job_is_invisible(ui, curated_job):
    job_id = curated_job["job_id"]
    login(ui, "key-bob")
    jobs = ui.get("/ui/jobs")
    assert jobs.status_code == 200 and job_id not in jobs.text
    for path in (f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/samples", f"/ui/jobs/{job_id}/samples/s00000",
                 f"/ui/jobs/{job_id}/thumbs/s00000.jpg", f"/ui/datasets/{curated_job['dataset_id']}"):
        assert ui.get(path).status_code == 404, path
    assert ui.get(f"/v1/jobs/{job_id}/reviews", headers=BOB).status_code == 404
    r = ui.post(f"/v1/jobs/{job_id}/reviews", json={"scene_id": "s00000", "decision": "reject"}, headers=BOB)
    assert r.status_code == 404


def test_curation_writes_thumbnails_and_a_page_index(ui, curated_job):
    job_id = curated_job["job_id"]
    store = ui.rt.store
    index = rv.read_index(store, job_id)
    annotated = list(store.list(keys.job_prefix(job_id) + "annotations/"))
    assert index.total == len(annotated) == 6
    assert index.kept + index.rejected == index.total
    page = rv.read_page(store, job_id, 0)
    assert [s.scene_id for s in page] == sorted(s.scene_id for s in page)
    for s in page:
        assert store.exists(rv.thumbnail(job_id, s.scene_id)) and store.exists(rv.thumbnail_overlay(job_id, s.scene_id))
        assert rv.read_entry(store, job_id, s.scene_id).summary == s
    login(ui, "key-alice")
    grid = ui.get(f"/ui/jobs/{job_id}/samples")
    assert grid.status_code == 200 and grid.text.count('class="tile ') == 6
    thumb = ui.get(f"/ui/jobs/{job_id}/thumbs/{page[0].scene_id}.jpg")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    kept = ui.get(f"/ui/jobs/{job_id}/samples?status=kept")
    assert kept.text.count('class="tile kept"') == index.kept and 'class="tile rejected"' not in kept.text
    cat = page[0].instances[0].category
    by_cat = ui.get(f"/ui/jobs/{job_id}/samples", params={"category": cat})
    expected = sum(any(i.category == cat for i in s.instances) for s in page)
    assert by_cat.text.count('class="tile ') == expected
    none = ui.get(f"/ui/jobs/{job_id}/samples", params={"min_score": "1.5"})
    assert 'id="no-samples"' in none.text
    bad = ui.get(f"/ui/jobs/{job_id}/samples", params={"min_score": "abc"})
    assert bad.status_code == 422 and "min_score" in bad.text
    for path in (f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/plots", f"/ui/jobs/{job_id}/samples/{page[0].scene_id}",
                 f"/ui/jobs/{job_id}/samples/{page[0].scene_id}/overlay.png", "/ui/static/ui.js"):
        assert ui.get(path).status_code == 200, path
    assert "<svg" in ui.get(f"/ui/jobs/{job_id}/plots").text


def test_filtered_pages_equal_a_scan_of_every_sample(ui, curated_job):
    job_id = curated_job["job_id"]
    store = ui.rt.store
    summaries = rv.read_page(store, job_id, 0)
    # The same samples re-indexed two to a page, so that filters gather across pages.
    from dreammask.services.curation.sample_index import write_index

    small = write_index(store, job_id, summaries, page_size=2)
    assert small.pages == 3
    cat = summaries[0].instances[0].category
    filters = [rv.SampleFilter(status="kept"), rv.SampleFilter(status="rejected"), rv.SampleFilter(category=cat),
               rv.SampleFilter(category=cat, status="kept"), rv.SampleFilter(min_score=0.5, max_score=0.9),
               rv.SampleFilter(category=cat, min_score=0.9), rv.SampleFilter(category="no such category")]
    filters += [rv.SampleFilter(rule=r) for r in small.rules + small.sample_rules]
    for flt in filters:
        want = [s.scene_id for s in summaries if flt.matches(s)]
        got, page = [], 0
        while True:
            items, more = rv.query(store, job_id, small, page, flt)
            assert len(items) <= 2
            got += [s.scene_id for s in items]
            page += 1
            if not more:
                break
        assert got == want, flt
    # One facet alone is one read of one facet page.
    reads = []
    original = store.get_json
    store.get_json = lambda key: reads.append(key) or original(key)
    try:
        rv.query(store, job_id, small, 0, rv.SampleFilter(status="kept"))
    finally:
        store.get_json = original
    assert len(reads) == 1 and "/facets/" in reads[0]


def test_review_api_and_publish_honour_decisions(ui, curated_job):
    job_id, ds = curated_job["job_id"], curated_job["dataset_id"]
    store = ui.rt.store
    kept = [s for s in rv.read_page(store, job_id, 0) if s.kept]
    assert len(kept) >= 2, "the fixture job should keep at least two samples"
    target, dropped_sample = kept[0], kept[1]
    inst = next(i for i in target.instances if i.kept)
    r = ui.post(f"/v1/jobs/{job_id}/reviews", json={"scene_id": target.scene_id, "instance_id": inst.id,
                                                    "decision": "reject"}, headers=ALICE)
    assert r.status_code == 201, r.text
    assert r.json()["instances"][str(inst.id)]["who"].startswith("alice/")
    r = ui.post(f"/v1/jobs/{job_id}/reviews", json={"scene_id": dropped_sample.scene_id, "decision": "reject"},
                headers=ALICE)
    assert r.status_code == 201
    bad = ui.post(f"/v1/jobs/{job_id}/reviews", json={"scene_id": target.scene_id, "instance_id": 999,
                                                      "decision": "reject"}, headers=ALICE)
    assert bad.status_code == 422 and "instance_id" in bad.json()["detail"]
    bad = ui.post(f"/v1/jobs/{job_id}/reviews", json={"scene_id": "s99999", "decision": "reject"}, headers=ALICE)
    assert bad.status_code == 404 and "scene_id" in bad.json()["detail"]
    listed = ui.get(f"/v1/jobs/{job_id}/reviews", headers=ALICE).json()
    assert listed["total"] == 2

    first_before = store.get_bytes(keys.dataset_file(ds, keys.COCO_INSTANCES))
    r = ui.post(f"/v1/datasets/{ds}/versions", json={"note": "reviewed"}, headers=ALICE)
    assert r.status_code == 202 and r.json()["state"] == "pending" and r.json()["version"] == 2
    ui.run()  # the curation queue's publish task
    versions = ui.get(f"/v1/datasets/{ds}/versions", headers=ALICE).json()["items"]
    assert [v["version"] for v in versions] == [1, 2] and versions[1]["state"] == "published"
    v2 = versions[1]["dataset_id"]
    assert v2 == f"{ds}-v2"
    # The first version is byte for byte what it was; the new one leaves out what was rejected.
    assert store.get_bytes(keys.dataset_file(ds, keys.COCO_INSTANCES)) == first_before
    coco1 = ui.get(f"/v1/datasets/{ds}/files/annotations/instances.json", headers=ALICE).json()
    coco2 = ui.get(f"/v1/datasets/{v2}/files/annotations/instances.json", headers=ALICE).json()
    scenes1 = {i["scene_id"] for i in coco1["images"]}
    scenes2 = {i["scene_id"]: i["id"] for i in coco2["images"]}
    assert dropped_sample.scene_id in scenes1 and dropped_sample.scene_id not in scenes2
    assert target.scene_id in scenes2
    anns1 = [a for a in coco1["annotations"]
             if a["image_id"] == next(i["id"] for i in coco1["images"] if i["scene_id"] == target.scene_id)]
    anns2 = [a for a in coco2["annotations"] if a["image_id"] == scenes2[target.scene_id]]
    assert len(anns2) == len(anns1) - 1
    assert versions[1]["reviews"]["instances_rejected"] == 1 and versions[1]["reviews"]["samples_rejected"] == 1
    # Both versions are listed from either dataset id, and the UI shows them.
    assert ui.get(f"/v1/datasets/{v2}/versions", headers=ALICE).json()["items"] == versions
    login(ui, "key-alice")
    page = ui.get(f"/ui/datasets/{ds}")
    assert v2 in page.text and "published" in page.text
    assert ui.get(f"/v1/datasets/{ds}/versions", headers=BOB).status_code == 404


def _summary(sid, kept, reason, *insts):
    return rv.SampleSummary(scene_id=sid, kept=kept, reason=reason, instances=[
        rv.InstanceSummary(id=i, category=c, score=sc, kept=k, rules=r) for i, (c, sc, k, r) in enumerate(insts)])


def test_sample_level_rules_are_filters_like_instance_rules(tmp_path):
    from dreammask.services.curation.sample_index import write_index

    store = LocalObjectStore(tmp_path)
    few = "too few instances kept: 1/3 instances pass (0.33 < min_kept_fraction 0.50)"
    summaries = [
        _summary("s00000", True, None, ("dog", 0.91, True, []), ("sky", 0.85, True, [])),
        _summary("s00001", False, few, ("dog", 0.95, True, []), ("sky", 0.2, False, ["score<0.30"]),
                 ("road", 0.1, False, ["score<0.30"])),
        _summary("s00002", False, "novel instance rejected: dog #0 score<0.30 (quality=0.10)",
                 ("dog", 0.1, False, ["score<0.30"])),
        _summary("s00003", False, "no instances: the annotation holds no instance"),
    ]
    index = write_index(store, "j1", summaries, page_size=2)
    assert index.rules == ["score<0.30"]
    assert index.sample_rules == ["no instances", "novel instance rejected", "too few instances kept"]
    assert summaries[1].sample_rule == "too few instances kept" and summaries[0].sample_rule is None
    for rule, want in (("too few instances kept", ["s00001"]), ("no instances", ["s00003"]),
                       ("novel instance rejected", ["s00002"]), ("score<0.30", ["s00001", "s00002"])):
        flt = rv.SampleFilter(rule=rule)
        assert [s.scene_id for s in summaries if flt.matches(s)] == want, rule
        got, page = [], 0
        while True:
            items, more = rv.query(store, "j1", index, page, flt)
            got += [s.scene_id for s in items]
            page += 1
            if not more:
                break
        assert got == want, rule
    # The plots' fine bins: [k/100, (k+1)/100), and the score range of each category.
    stats = store.get_json(rv.sample_stats("j1"))
    dog = stats["categories"]["dog"]
    # (an instance that passed in a dropped sample counts as rejected: it is not in the dataset)
    assert dog["min"] == 0.1 and dog["max"] == 0.95 and sum(dog["fine_kept"]) + sum(dog["fine_rejected"]) == 3
    assert dog["fine_kept"][91] == 1 and dog["fine_rejected"][95] == 1 and dog["fine_rejected"][10] == 1


def test_refusals_are_pages_for_browsers_and_json_for_scripts(ui):
    login(ui, "key-alice")
    r = ui.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui"
    html = {"Accept": "text/html,application/xhtml+xml"}
    for path, needle in (("/ui/jobs/job-nope", "no job &#39;job-nope&#39;"), ("/ui/datasets/ds-nope", "no dataset"),
                         ("/ui/no/such/page", "there is no page /ui/no/such/page")):
        r = ui.get(path, headers=html)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), path
        assert 'id="error-page"' in r.text and needle in r.text and 'id="logout"' in r.text, path
        assert "default-src 'self'" in r.headers["content-security-policy"]
    r = ui.get("/ui/jobs/x/samples?page=0", headers=html)
    assert r.status_code == 404 or (r.status_code == 422 and 'id="error-page"' in r.text)
    # The page's script asks for JSON and gets JSON.
    token = page_csrf(ui.get("/ui/jobs").text)
    r = ui.post("/ui/jobs/job-nope/reviews", json={"scene_id": "s00000", "decision": "reject"},
                headers={"X-CSRF-Token": token, "Accept": "application/json"})
    assert r.status_code == 404 and r.json()["detail"] == "no job 'job-nope'"
    # Without a session, an unknown page still shows no data and offers the login.
    ui.cookies.clear()
    r = ui.get("/ui/no/such/page", headers=html)
    assert r.status_code == 404 and 'id="to-login"' in r.text and 'id="logout"' not in r.text


def test_masks_plots_card_and_times_on_the_pages(ui, curated_job):
    job_id, ds = curated_job["job_id"], curated_job["dataset_id"]
    store = ui.rt.store
    login(ui, "key-alice")
    sid = rv.read_page(store, job_id, 0)[0].scene_id
    ann = store.get_model(keys.annotation(job_id, sid), SceneAnnotation)
    # masks.png: instance k exactly, in channel k % 3 of tile k // 3.
    r = ui.get(f"/ui/jobs/{job_id}/samples/{sid}/masks.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    px = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    h, w = ann.height, ann.width
    assert px.shape == (h * -(-len(ann.instances) // 3), w, 3)
    for k, inst in enumerate(ann.instances):
        tile = px[(k // 3) * h:(k // 3 + 1) * h, :, k % 3] > 127
        assert np.array_equal(tile, decode_rle(inst.mask.model_dump())), k
    page = ui.get(f"/ui/jobs/{job_id}/samples/{sid}").text
    for name in dict.fromkeys(k for i in ann.instances for k in i.scores):
        assert re.search(rf'<th class="score[^"]*"[^>]*>{name}</th>', page), name
    assert 'class="provenance"' in page and 'id="prov-annotation"' in page and '"mask_backend"' not in page

    # Plots: bars are links to the grid filtered by category and score range; the threshold is named.
    plots = ui.get(f"/ui/jobs/{job_id}/plots").text
    links = re.findall(r'<a href="(/ui/jobs/[^"]+/samples\?[^"]+)" class="bar"', plots)
    assert links and all("category=" in u for u in links)
    assert "min_score 0.3" in plots and 'id="rates"' in plots
    first = links[0].replace("&amp;", "&")
    assert ui.get(first).status_code == 200

    # The card: HTML from Markdown, and a card holding HTML shows it as text.
    store.put_bytes(keys.dataset_file(ds, keys.CARD_MD),
                    b"# Card\n\n- <script>alert(1)</script>\n- [x](javascript:alert(2))\n")
    page = ui.get(f"/ui/datasets/{ds}").text
    assert '<article class="card" id="card"><h1>Card</h1>' in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="javascript' not in page
    # One timestamp format: no ISO 8601 'T' times on the pages that show times.
    for path in (f"/ui/datasets/{ds}", f"/ui/jobs/{job_id}", "/ui/jobs"):
        text = ui.get(path).text
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text), path
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", text), path


def test_the_sample_page_names_its_seeds_and_says_when_its_history_was_truncated(ui, curated_job):
    import html as htmllib

    from dreammask.shared.schemas import RenderRecord, SceneLayout

    job_id = curated_job["job_id"]
    store = ui.rt.store
    login(ui, "key-alice")
    sid = rv.read_page(store, job_id, 0)[0].scene_id
    plan = ui.rt.tracker.plan(job_id)
    layout = store.get_model(keys.layout(job_id, sid), SceneLayout)
    render = store.get_model(keys.render_record(job_id, sid), RenderRecord)

    def text_of(page: str, ident: str) -> str:
        m = re.search(rf'<dd id="{ident}">(.*?)</dd>', page, re.S)
        assert m, ident
        return htmllib.unescape(re.sub(r"<[^>]+>", "", m.group(1))).strip()

    page = ui.get(f"/ui/jobs/{job_id}/samples/{sid}").text
    assert text_of(page, "seed-job") == str(plan.job_seed) == "7"  # the fixture job's seed
    assert text_of(page, "seed-scene").startswith(f"{plan.scene(sid).seed} ")
    assert text_of(page, "seed-layout") == str(layout.seed)
    assert text_of(page, "seed-render") == str(render.seed)
    assert 'id="history-dropped"' not in page

    # A sample decided more often than the history keeps: the page says how many older decisions are gone.
    rec = rv.SampleReview(job_id=job_id, scene_id=sid)
    for i in range(ui.rt.settings.review_history_limit + 7):
        rec.apply(rv.ReviewEvent(decision="reject" if i % 2 else "accept", who="alice/x"),
                  keep=ui.rt.settings.review_history_limit)
    store.put_json(rv.review(job_id, sid), rec)
    page = ui.get(f"/ui/jobs/{job_id}/samples/{sid}").text
    m = re.search(r'<span id="history-dropped">([^<]+)</span>', page)
    assert m and m.group(1) == "7 older ones not kept", page[page.find("Review history"):][:400]
    assert f"the last {ui.rt.settings.review_history_limit} decisions" in page
    assert "DREAMMASK_REVIEW_HISTORY_LIMIT" in page


def test_publishing_over_the_bytes_quota_from_the_ui_is_a_429_page_saying_what_to_do(ui, curated_job):
    job_id, ds = curated_job["job_id"], curated_job["dataset_id"]
    login(ui, "key-alice")
    sid = rv.read_page(ui.rt.store, job_id, 0)[0].scene_id
    r = ui.post(f"/v1/jobs/{job_id}/reviews", json={"scene_id": sid, "instance_id": None, "decision": "reject"},
                headers={"Authorization": "Bearer key-alice"})
    assert r.status_code == 201, r.text
    ui.rt.settings.quota_stored_bytes = 1  # already used up by the job itself
    csrf = page_csrf(ui.get(f"/ui/datasets/{ds}").text)
    r = ui.post(f"/ui/datasets/{ds}/versions", data={"csrf_token": csrf, "note": "v2"},
                headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 429 and r.headers["content-type"].startswith("text/html"), r.text[:300]
    assert "quota stored_bytes exceeded" in r.text and "delete" in r.text and int(r.headers["Retry-After"]) > 0
    assert [v["version"] for v in ui.get(f"/v1/datasets/{ds}/versions",
                                         headers={"Authorization": "Bearer key-alice"}).json()["items"]] == [1]


def test_a_store_outage_is_an_html_page_for_the_browser_and_json_for_scripts(tmp_path, redis_url, redis_client):
    from fastapi.testclient import TestClient

    from dreammask.services.api.main import create_app
    from dreammask.services.cli.harness import free_port
    from dreammask.shared.runtime import build_runtime
    from dreammask.shared.settings import Settings
    from dreammask.shared.storage.s3 import S3ObjectStore

    html = {"Accept": "text/html"}
    s = Settings(redis_url=redis_url, api_keys={"key-alice": "alice"}, public_base_url="http://testserver")
    # Object storage down (nothing listens there); Redis up, so the login and its session work.
    store = S3ObjectStore(f"127.0.0.1:{free_port()}", "k", "s", "dreammask", create_bucket=False, timeout_s=0.3,
                          retries=0)
    with TestClient(create_app(s, build_runtime(s, store=store))) as c:
        assert login(c, "key-alice").status_code == 303
        r = c.get("/ui/jobs", headers=html)
        assert r.status_code == 503 and r.headers["content-type"].startswith("text/html"), r.text[:300]
        assert 'id="error-page"' in r.text and "object storage is unavailable" in r.text and "retry later" in r.text
        assert 'id="back-to-jobs"' in r.text and r.headers["Retry-After"]
        api = c.get("/ui/jobs", headers={"Accept": "application/json"})
        assert api.status_code == 503 and api.json()["unavailable"] == "storage"
    # Redis down: no session can be read, the page still renders, pointing to the login page.
    dead = s.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead, build_runtime(dead, store=LocalObjectStore(tmp_path / "objects")))) as c:
        r = c.get("/ui/jobs", headers=html)
        assert r.status_code == 503 and 'id="error-page"' in r.text, r.text[:300]
        assert "the broker (Redis) is unavailable" in r.text and 'id="to-login"' in r.text
