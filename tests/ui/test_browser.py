"""The review UI in a real browser (headless Chromium), on the real platform: API and workers as processes.

Screenshots land in test-artifacts/ui/ (or $DREAMMASK_TEST_ARTIFACTS/ui)."""

from __future__ import annotations

import json
import time

import pytest
import redis
from browser import MISSING, artifacts_dir, find_browser, start_chromium

from dreammask.services.cli.harness import LocalPlatform

pytestmark = [pytest.mark.integration, pytest.mark.browser,
              pytest.mark.skipif(find_browser() is None, reason=MISSING)]

KEY, OTHER_KEY = "ui-key-alice", "ui-key-bob"
SPEC = {"name": "browser test", "train_categories": ["person", "dog", "car", "building", "sky", "road"],
        "num_novel": 2, "images_per_category": 3, "image_size": 128, "seed": 11,
        # Strict enough that the rules reject some samples, so that the kept/rejected filter has work to do.
        "thresholds": {"min_score": 0.95, "min_kept_fraction": 0.0}}


@pytest.fixture(scope="module")
def plat(tmp_path_factory, redis_url, shared_cache_dir):
    redis.Redis.from_url(redis_url).flushdb()
    env = {"DREAMMASK_CACHE_DIR": str(shared_cache_dir),
           "DREAMMASK_API_KEYS": json.dumps({KEY: "alice", OTHER_KEY: "bob"})}
    p = LocalPlatform(tmp_path_factory.mktemp("ui-platform"), env=env, redis_url=redis_url, api_key=KEY,
                      tenant="alice")
    with p:
        yield p


@pytest.fixture()
def browser():
    d = start_chromium()
    d.implicitly_wait(0)
    yield d
    d.quit()


def shot(d, name: str) -> None:
    d.save_screenshot(str(artifacts_dir() / f"{name}.png"))


def wait_for(d, check, timeout: float = 60.0, what: str = "", poll: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check(d)
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the page may be between loads
            last = e
        time.sleep(poll)
    shot(d, f"timeout-{what.replace(' ', '-')}")
    raise TimeoutError(f"timed out waiting for {what} (last: {last!r}) on {d.current_url}")


def log_in(d, base: str, key: str, then: str = "/ui/jobs") -> None:
    from selenium.webdriver.common.by import By

    d.get(base + then)
    wait_for(d, lambda d: d.find_element(By.ID, "login-form"), what="login form")
    d.find_element(By.ID, "api-key").send_keys(key)
    d.find_element(By.ID, "login-submit").click()
    wait_for(d, lambda d: d.find_elements(By.ID, "logout"), what="logged in")


def test_review_a_job_end_to_end_in_the_browser(plat, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d, base = browser, plat.api_url
    log_in(d, base, KEY)
    shot(d, "01-jobs-empty")
    job_id = plat.submit(SPEC)
    # The jobs page polls: the new job appears and its progress bars move to done without a reload.
    row = f'tr[data-job="{job_id}"]'
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, row), timeout=30, what="job row")
    states = set()

    def done(d):
        st = d.find_element(By.CSS_SELECTOR, row).get_attribute("data-state")
        states.add(st)
        return st in ("succeeded", "failed", "cancelled") and st
    final = wait_for(d, done, timeout=300, what="job done")
    shot(d, "02-jobs-done")
    assert final == "succeeded", plat.tail_logs()
    assert states & {"queued", "running"}, f"never saw the job in progress: {states}"
    bars = d.find_elements(By.CSS_SELECTOR, f"{row} progress")
    assert bars and all(b.get_attribute("value") == b.get_attribute("max") for b in bars)

    # Job page: stages, novel categories.
    d.find_element(By.CSS_SELECTOR, f'{row} a[href="/ui/jobs/{job_id}"]').click()
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "table.novel tbody tr"), what="novel table")
    assert len(d.find_elements(By.CSS_SELECTOR, "table.novel tbody tr")) == 2
    shot(d, "03-job")

    # Grid, then a filter: kept samples only.
    d.find_element(By.ID, "open-samples").click()
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .tile"), what="grid")
    all_tiles = len(d.find_elements(By.CSS_SELECTOR, "#grid .tile"))
    assert all_tiles == 6
    # Every thumbnail and its mask overlay decode (made once at curation, served from storage).
    wait_for(d, lambda d: d.execute_script(
        "const ims = Array.from(document.querySelectorAll('#grid img'));"
        "return ims.length === 12 && ims.every((im) => im.complete && im.naturalWidth > 0);"),
        timeout=30, what="thumbnails")
    d.find_element(By.ID, "toggle-masks").click()
    assert "hide-masks" in d.find_element(By.TAG_NAME, "body").get_attribute("class")
    d.find_element(By.ID, "toggle-masks").click()
    shot(d, "04-grid")
    Select(d.find_element(By.ID, "f-status")).select_by_value("kept")
    d.find_element(By.ID, "apply-filters").click()
    wait_for(d, lambda d: "status=kept" in d.current_url, what="filtered grid")
    kept_tiles = d.find_elements(By.CSS_SELECTOR, "#grid .tile")
    wait_for(d, lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('#grid img')).every((im) => im.complete && im.naturalWidth > 0);"),
        timeout=30, what="filtered thumbnails")
    assert kept_tiles and all("kept" in t.get_attribute("class").split() for t in kept_tiles)
    assert 0 < len(kept_tiles) < all_tiles
    shot(d, "05-grid-kept")

    # One sample: reject one kept instance with the keyboard (j selects, x rejects).
    scene = kept_tiles[0].get_attribute("data-scene")
    kept_tiles[0].click()
    wait_for(d, lambda d: d.find_elements(By.ID, "instances"), what="sample page")
    wait_for(d, lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('#stage img')).every((im) => im.complete && im.naturalWidth > 0)"
        " && document.getElementById('sample').dataset.viewer === 'ready';"),
        timeout=30, what="sample image and its masks")
    rows = d.find_elements(By.CSS_SELECTOR, "#instances tbody tr")
    pick = next(i for i, r in enumerate(rows) if "ok" in r.get_attribute("class").split())
    instance_id = int(rows[pick].get_attribute("data-instance"))
    body = d.find_element(By.TAG_NAME, "body")
    for _ in range(pick + 1):
        body.send_keys("j")
    body.send_keys("x")
    wait_for(d, lambda d: "saved: reject" in d.find_element(By.ID, "review-status").text, what="review saved")
    mark = d.find_elements(By.CSS_SELECTOR, "#instances tbody tr")[pick].find_element(By.CSS_SELECTOR, "td.mark")
    assert mark.text.startswith("rejected by alice/")
    shot(d, "06-sample-rejected")
    reviews = plat.client.get(f"/v1/jobs/{job_id}/reviews").json()["items"]
    assert reviews[0]["scene_id"] == scene and reviews[0]["instances"][str(instance_id)]["decision"] == "reject"

    # Publish a new version from the dataset page; it leaves the rejected instance out.
    ds = plat.job(job_id)["dataset_id"]
    d.get(f"{base}/ui/datasets/{ds}")
    d.find_element(By.ID, "publish").click()
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-version="2"][data-state="published"]'),
             timeout=120, what="version 2 published")
    shot(d, "07-dataset-versions")
    versions = plat.client.get(f"/v1/datasets/{ds}/versions").json()["items"]
    assert [v["state"] for v in versions] == ["published", "published"]
    v2 = versions[1]["dataset_id"]

    def coco(dataset_id):
        return plat.client.get(f"/v1/datasets/{dataset_id}/files/annotations/instances.json").json()

    def instances_of(c, sid):
        # A sample whose last kept instance was rejected leaves the version altogether (no image, no instance).
        image_id = next((i["id"] for i in c["images"] if i["scene_id"] == sid), None)
        return [a for a in c["annotations"] if a["image_id"] == image_id]

    c1, c2 = coco(ds), coco(v2)
    assert instances_of(c1, scene), "the reviewed sample is in version 1"
    assert len(instances_of(c2, scene)) == len(instances_of(c1, scene)) - 1
    assert len(c2["annotations"]) == len(c1["annotations"]) - 1
    # The rejected instance's mask is in version 1 and not in version 2.
    ann = plat.client.get(f"/v1/jobs/{job_id}/files/annotations/{scene}.json").json()
    rejected_mask = next(i["mask"]["counts"] for i in ann["instances"] if i["instance_id"] == instance_id)
    assert rejected_mask in {a["segmentation"]["counts"] for a in instances_of(c1, scene)}
    assert rejected_mask not in {a["segmentation"]["counts"] for a in instances_of(c2, scene)}

    # Plots render as SVG.
    d.get(f"{base}/ui/jobs/{job_id}/plots")
    assert d.find_elements(By.CSS_SELECTOR, "#histograms svg")
    shot(d, "08-plots")


def test_without_a_key_the_ui_shows_the_login_page_and_no_data(plat, browser):
    from selenium.webdriver.common.by import By

    job_id = plat.submit({**SPEC, "name": "private job", "images_per_category": 1})
    d = browser
    for path in ("/ui/jobs", f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/samples"):
        d.get(plat.api_url + path)
        wait_for(d, lambda d: d.find_elements(By.ID, "login-form"), what="login page")
        assert "private job" not in d.page_source
        assert not d.find_elements(By.CSS_SELECTOR, "table.jobs, #grid, table.novel")
    d.find_element(By.ID, "api-key").send_keys("wrong-key")
    d.find_element(By.ID, "login-submit").click()
    wait_for(d, lambda d: d.find_elements(By.ID, "login-error"), what="login error")
    shot(d, "09-login-refused")
    assert not any(c["name"] == "dm_session" for c in d.get_cookies())


def test_another_tenants_job_is_invisible_in_the_browser(plat, browser):

    job_id = plat.submit({**SPEC, "name": "alice only", "images_per_category": 1})
    d = browser
    log_in(d, plat.api_url, OTHER_KEY)
    assert "alice only" not in d.page_source and job_id not in d.page_source
    d.get(f"{plat.api_url}/ui/jobs/{job_id}")
    assert "alice only" not in d.page_source and "no job" in d.page_source
    shot(d, "10-other-tenant")
    cookie = next(c for c in d.get_cookies() if c["name"] == "dm_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_state_changes_without_the_csrf_token_are_refused_in_the_browser(plat, browser):
    job_id = plat.submit({**SPEC, "images_per_category": 1})
    d = browser
    log_in(d, plat.api_url, KEY)
    # Same origin, with the session cookie, but no token: refused. With the page's token: accepted.
    script = """
      const [url, body, token, done] = arguments;
      const headers = {"Content-Type": "application/json"};
      if (token) headers["X-CSRF-Token"] = token;
      fetch(url, {method: "POST", credentials: "same-origin", headers, body: JSON.stringify(body)})
        .then(r => done(r.status), e => done(String(e)));
    """
    body = {"scene_id": "s00000", "decision": "reject"}
    url = f"/ui/jobs/{job_id}/reviews"
    assert d.execute_async_script(script, url, body, None) == 403
    assert d.execute_async_script(script, url, body, "forged") == 403
    assert d.execute_async_script(script, "/ui/datasets/ds-x/versions", {}, None) == 403
    assert d.execute_async_script(script, "/ui/logout", {}, None) == 403
    assert plat.client.get(f"/v1/jobs/{job_id}/reviews").json()["total"] == 0
