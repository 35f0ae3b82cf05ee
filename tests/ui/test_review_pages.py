"""The review pages a reviewer reads, in headless Chromium at 1400x900: masks you can read (fills, outlines,
labels, opacity, per-instance toggles, highlight on hover and on j/k, zoom and pan), the instance table beside
the image, the grid's reasons and review state, plots over the data's range with the threshold and clickable
bars, sortable tables, HTML error pages, the job page filling in after association, the publish count.
Keyboard flows are driven with keys, as a reviewer would.

The API runs in this process (uvicorn on loopback, `live_ui` in conftest.py) with one curated job; the
pages are checked through the DOM and the canvas's pixels. Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

import re

import numpy as np
import pytest
from browser import MISSING, csp_violations, find_browser, log_in, shot, start_chromium, wait_for

from dreammask.shared import keys
from dreammask.shared import review as rv
from dreammask.shared.masks import decode_rle
from dreammask.shared.schemas import SceneAnnotation

pytestmark = [pytest.mark.integration, pytest.mark.browser,
              pytest.mark.skipif(find_browser() is None, reason=MISSING)]

KEY = "key-alice"


@pytest.fixture(scope="module")
def browser():
    d = start_chromium(1400, 900)
    d.implicitly_wait(0)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def logged_in(browser, live_ui):
    log_in(browser, live_ui.url, KEY)
    return browser


def _summaries(live_ui) -> list[rv.SampleSummary]:
    index = rv.read_index(live_ui.rt.store, live_ui.job_id)
    return [s for p in range(index.pages) for s in rv.read_page(live_ui.rt.store, live_ui.job_id, p)]


def _annotation(live_ui, sid: str) -> SceneAnnotation:
    return live_ui.rt.store.get_model(keys.annotation(live_ui.job_id, sid), SceneAnnotation)


def _inner_points(ann: SceneAnnotation) -> list[tuple[float, float] | None]:
    """For each instance, a point (as fractions of the image) inside its mask, away from its edge and from
    every other mask: where the canvas shows that instance alone."""
    from scipy.ndimage import binary_erosion

    masks = [decode_rle(i.mask.model_dump()) for i in ann.instances]
    out = []
    for k, m in enumerate(masks):
        others = np.zeros_like(m)
        for j, o in enumerate(masks):
            if j != k:
                others |= o
        alone = binary_erosion(m & ~others, iterations=2)
        ys, xs = np.nonzero(alone)
        if not len(xs):
            out.append(None)
            continue
        i = len(xs) // 2
        out.append(((xs[i] + 0.5) / ann.width, (ys[i] + 0.5) / ann.height))
    return out


PIXEL = """
const [fx, fy] = arguments; const c = document.getElementById('mask-canvas');
const x = Math.floor(fx * c.width), y = Math.floor(fy * c.height);
return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data);
"""
COVERAGE = """
const c = document.getElementById('mask-canvas');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let opaque = 0, any = 0;
for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) any++; if (d[i] === 255) opaque++; }
return [any, opaque];
"""


def _alpha(d, point) -> int:
    return d.execute_script(PIXEL, *point)[3]


def _press(d, *keys_: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(d)  # keys go to whatever has the focus, as a person's do
    for k in keys_:
        chain.send_keys(k)
    chain.perform()


def _rect(d, el) -> dict:
    return d.execute_script("return arguments[0].getBoundingClientRect().toJSON();", el)


def _pick_sample(live_ui) -> tuple[str, SceneAnnotation, list]:
    """A sample with at least two instances, each visible alone somewhere on the image."""
    for s in _summaries(live_ui):
        ann = _annotation(live_ui, s.scene_id)
        pts = _inner_points(ann)
        if len(ann.instances) >= 2 and pts[0] and pts[1]:
            return s.scene_id, ann, pts
    pytest.fail("no sample with two separable instances")


def test_masks_are_readable_and_the_table_sits_beside_the_image(logged_in, live_ui):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By

    d = logged_in
    sid, ann, pts = _pick_sample(live_ui)
    d.get(f"{live_ui.url}/ui/jobs/{live_ui.job_id}/samples/{sid}")
    wait_for(d, lambda d: d.find_element(By.ID, "sample").get_attribute("data-viewer") == "ready", what="viewer")
    shot(d, "20-sample-masks")

    # At 1400x900 the instance table is beside the image and in view, and the whole image is on screen.
    table, viewport = d.find_element(By.ID, "instances"), d.find_element(By.ID, "viewport")
    t, v = _rect(d, table), _rect(d, viewport)
    inner_h = d.execute_script("return window.innerHeight")
    assert t["left"] >= v["right"] - 1 and t["top"] < inner_h and t["bottom"] <= inner_h, (t, v, inner_h)
    assert v["bottom"] <= inner_h, (v, inner_h)
    # Scores as columns: one per score name, a number per instance.
    names = list(dict.fromkeys(k for i in ann.instances for k in i.scores))
    assert [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th.score")] == names
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    first = ann.instances[0]
    assert [td.text for td in rows[0].find_elements(By.CSS_SELECTOR, "td.score")] == \
        [f"{first.scores[k]:.3f}" if k in first.scores else "–" for k in names]

    # Fills in each instance's colour at the chosen opacity (45 % by default); labels off to read pixels.
    _press(d, "l")
    p0, p1 = pts[0], pts[1]
    px = d.execute_script(PIXEL, *p0)
    colour = rows[0].get_attribute("data-color")
    # (the canvas stores premultiplied colour: a unit of rounding either way)
    assert all(abs(a - b) <= 2 for a, b in zip(px[:3], [int(colour[i:i + 2], 16) for i in (1, 3, 5)])), px
    assert px[3] == round(255 * 0.45), px
    # Opacity: the slider's keys.
    _press(d, "]")
    assert _alpha(d, p0) == round(255 * 0.55) and d.find_element(By.ID, "opacity").get_attribute("value") == "55"
    _press(d, "[")
    assert _alpha(d, p0) == round(255 * 0.45)

    # j selects the first instance: its mask is highlighted, the others dimmed; k moves back.
    _press(d, "j")
    assert "selected" in rows[0].get_attribute("class")
    assert _alpha(d, p0) == round(255 * 0.75) and _alpha(d, p1) == round(255 * 0.45 * 0.5)
    _press(d, "j")
    assert _alpha(d, p1) == round(255 * 0.75) and _alpha(d, p0) == round(255 * 0.45 * 0.5)
    _press(d, "k")
    assert "selected" in rows[0].get_attribute("class") and _alpha(d, p0) == round(255 * 0.75)
    shot(d, "21-sample-selected")

    # Hover over the second instance on the image: its row and its mask light up, the line below names it.
    img = d.find_element(By.ID, "sample-image")
    r = _rect(d, img)
    ActionChains(d).move_to_element_with_offset(img, int((p1[0] - 0.5) * r["width"]),
                                                int((p1[1] - 0.5) * r["height"])).perform()
    wait_for(d, lambda d: "hovered" in rows[1].get_attribute("class"), what="hover highlight")
    assert _alpha(d, p1) == round(255 * 0.75)
    assert f"#{ann.instances[1].instance_id} {ann.instances[1].category}" in d.find_element(By.ID, "hover-info").text

    # Per-instance toggle: the second mask leaves the image and comes back.
    ActionChains(d).move_to_element(table).perform()
    rows[1].find_element(By.CSS_SELECTOR, "input.show-instance").click()
    assert _alpha(d, p1) == 0 and _alpha(d, p0) > 0
    rows[1].find_element(By.CSS_SELECTOR, "input.show-instance").click()
    assert _alpha(d, p1) > 0

    # Outlines: at opacity 0 only the outlines are drawn, opaque; o turns them off. m hides every mask.
    ActionChains(d).move_to_element(d.find_element(By.TAG_NAME, "h1")).perform()  # nothing hovered
    for _ in range(5):
        _press(d, "[")
    _, opaque = d.execute_script(COVERAGE)
    assert opaque > 0 and _alpha(d, p1) == 0
    _press(d, "o")
    _, sel_opaque = d.execute_script(COVERAGE)
    assert sel_opaque < opaque  # only the selected instance keeps its (white) outline
    _press(d, "o", "]", "]", "]", "]", "]", "m")
    assert d.execute_script(COVERAGE) == [0, 0] and "hide-masks" in d.find_element(By.TAG_NAME, "body").get_attribute("class")
    _press(d, "m", "l")
    with_labels = d.execute_script(COVERAGE)[1]
    _press(d, "l")
    assert d.execute_script(COVERAGE)[1] < with_labels  # the labels' boxes are opaque

    # Zoom and pan: keys, the wheel, a drag; 0 fits again.
    stage = d.find_element(By.ID, "stage")
    sample = d.find_element(By.ID, "sample")
    _press(d, "+")
    assert sample.get_attribute("data-zoom") == "1.50" and "scale(1.5)" in stage.get_attribute("style")
    ActionChains(d).click_and_hold(img).move_by_offset(-120, -80).release().perform()
    m = re.search(r"translate\((-?[\d.]+)px, (-?[\d.]+)px\)", stage.get_attribute("style"))
    assert m and float(m.group(1)) < 0 and float(m.group(2)) < 0, stage.get_attribute("style")
    ActionChains(d).scroll_from_origin(ScrollOrigin.from_element(viewport), 0, -200).perform()
    wait_for(d, lambda d: float(sample.get_attribute("data-zoom")) > 1.5, what="wheel zoom")
    shot(d, "22-sample-zoomed")
    _press(d, "0")
    assert sample.get_attribute("data-zoom") == "1.00"
    assert not csp_violations(d)


def test_reviewing_with_the_keyboard_shows_on_the_sample_and_the_grid(logged_in, live_ui):
    from selenium.webdriver.common.by import By

    d = logged_in
    sid, ann, _ = _pick_sample(live_ui)
    d.get(f"{live_ui.url}/ui/jobs/{live_ui.job_id}/samples/{sid}")
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#instances tbody tr"), what="sample page")
    status = d.find_element(By.ID, "review-status")
    # x with nothing selected says what to do instead of doing nothing.
    _press(d, "x")
    assert "no instance selected" in status.text and "press j" in status.text
    _press(d, "j", "j", "x")
    wait_for(d, lambda d: "saved: reject instance" in status.text, what="instance rejected")
    row = d.find_elements(By.CSS_SELECTOR, "#instances tbody tr")[1]
    assert "rv-reject" in row.get_attribute("class") and row.find_element(By.CSS_SELECTOR, "td.mark").text.startswith("rejected by alice/")
    cat = row.find_element(By.CSS_SELECTOR, ".category")
    assert "line-through" in cat.value_of_css_property("text-decoration-line")
    _press(d, "R")
    wait_for(d, lambda d: "saved: reject sample" in status.text, what="sample rejected")
    shot(d, "23-sample-reviewed")

    # The grid shows both: the tile marked rejected by review, the instance struck through.
    d.get(f"{live_ui.url}/ui/jobs/{live_ui.job_id}/samples")
    tile = d.find_element(By.CSS_SELECTOR, f'.tile[data-scene="{sid}"]')
    assert tile.get_attribute("data-review") == "reject" and "rejected by review" in tile.text
    li = tile.find_element(By.CSS_SELECTOR, f'li[data-instance="{ann.instances[1].instance_id}"]')
    assert "rv-reject" in li.get_attribute("class")
    assert "line-through" in li.value_of_css_property("text-decoration-line")
    shot(d, "24-grid-reviewed")

    # The dataset page counts what a new version would add; after publishing, the count starts again.
    d.get(f"{live_ui.url}/ui/datasets/{live_ui.dataset_id}")
    button = d.find_element(By.ID, "publish")
    assert "Publish version 2" in button.text and "1 sample reviewed since curation" in button.text
    button.click()
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-version="2"]'), what="version 2 listed")
    live_ui.run()  # the curation queue's publish task
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-version="2"][data-state="published"]'),
             timeout=60, what="version 2 published")
    button = d.find_element(By.ID, "publish")
    assert "Publish version 3" in button.text and "0 samples reviewed since version 2" in button.text
    # Times in one format, here as on every page.
    when = [td.text for td in d.find_elements(By.CSS_SELECTOR, "table.versions tbody tr td:nth-child(8)")]
    assert when and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", w) for w in when), when
    # The card is HTML: headings and tables, not Markdown source.
    card = d.find_element(By.ID, "card")
    assert card.find_elements(By.TAG_NAME, "h1") and card.find_elements(By.TAG_NAME, "table")
    assert "| --- |" not in card.text and "# Dataset card" not in card.text
    assert not csp_violations(d)


def test_the_grid_shows_sample_reasons_and_filters_by_sample_rules(logged_in, live_ui):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = logged_in
    summaries = _summaries(live_ui)
    dropped = [s for s in summaries if not s.kept]
    assert dropped, "the fixture's thresholds should drop samples"
    d.get(f"{live_ui.url}/ui/jobs/{live_ui.job_id}/samples")
    for s in dropped:
        reason = d.find_element(By.CSS_SELECTOR, f'.tile[data-scene="{s.scene_id}"] .reason')
        assert reason.text.startswith(s.sample_rule) and reason.get_attribute("title") == s.reason
    too_few = [s for s in dropped if s.sample_rule == "too few instances kept"]
    assert too_few, [s.reason for s in dropped]
    # The rule filter lists the sample rules too; choosing one shows exactly the samples it dropped.
    rule = Select(d.find_element(By.ID, "f-rule"))
    labels = [o.text for o in rule.options]
    assert "too few instances kept (whole sample)" in labels
    rule.select_by_value("too few instances kept")
    d.find_element(By.ID, "apply-filters").click()
    wait_for(d, lambda d: "rule=too+few" in d.current_url, what="filtered by a sample rule")
    shown = {t.get_attribute("data-scene") for t in d.find_elements(By.CSS_SELECTOR, "#grid .tile")}
    assert shown == {s.scene_id for s in too_few}
    shot(d, "25-grid-sample-rule")
    # Keyboard: m hides the grid's masks.
    _press(d, "m")
    assert "hide-masks" in d.find_element(By.TAG_NAME, "body").get_attribute("class")
    _press(d, "m")


def test_plots_span_the_data_mark_the_threshold_and_open_the_grid(logged_in, live_ui):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = logged_in
    stats = live_ui.rt.store.get_json(rv.sample_stats(live_ui.job_id))
    min_score = live_ui.rt.tracker.spec(live_ui.job_id).spec.thresholds.min_score
    d.get(f"{live_ui.url}/ui/jobs/{live_ui.job_id}/plots")
    charts = d.find_elements(By.CSS_SELECTOR, "#histograms svg.histogram")
    assert len(charts) == len(stats["categories"])
    narrower = 0
    for svg in charts:
        cat = stats["categories"][svg.get_attribute("data-category")]
        bars = svg.find_elements(By.CSS_SELECTOR, "a.bar")
        if cat["min"] is None:
            assert not bars
            continue
        lo, hi = float(bars[0].get_attribute("data-lo")), float(bars[-1].get_attribute("data-hi"))
        # The range covers every score and comes from the data, not a fixed 0-1.
        assert lo <= cat["min"] and hi >= cat["max"], (lo, hi, cat["min"], cat["max"])
        narrower += (hi - lo) < 1.0
        line = svg.find_elements(By.CSS_SELECTOR, "line.threshold")
        if lo <= min_score <= hi:
            assert line and float(line[0].get_attribute("data-value")) == min_score
        else:
            label = svg.find_element(By.CSS_SELECTOR, "text.threshold-label").text
            assert f"min_score {min_score:g}" in label and ("below" in label or "above" in label)
    assert narrower >= 1
    shot(d, "26-plots")

    # A click on a bar opens the grid filtered to its category and range: the tiles hold exactly its instances.
    def count(b):
        m = re.search(r": (\d+) kept, (\d+) rejected", b.get_attribute("aria-label"))
        return int(m.group(1)) + int(m.group(2))
    bar = next(b for s in charts for b in s.find_elements(By.CSS_SELECTOR, "a.bar") if count(b))
    category = bar.find_element(By.XPATH, "ancestor::*[local-name()='svg']").get_attribute("data-category")
    lo, hi = float(bar.get_attribute("data-lo")), float(bar.get_attribute("data-hi"))
    expected = count(bar)
    bar.click()
    wait_for(d, lambda d: "/samples?" in d.current_url and "category=" in d.current_url, what="filtered grid")
    insts = [li for li in d.find_elements(By.CSS_SELECTOR, f'#grid li[data-category="{category}"]')
             if li.get_attribute("data-score") is not None
             and lo <= float(li.get_attribute("data-score")) < hi + (1e-9 if hi < 1 else 1)]
    assert len(insts) == expected, (category, lo, hi, expected, d.current_url)
    assert all(t.find_elements(By.CSS_SELECTOR, f'li[data-category="{category}"]')
               for t in d.find_elements(By.CSS_SELECTOR, "#grid .tile"))

    # The kept-rate table sorts by a column, by mouse and by keyboard.
    d.get(f"{live_ui.url}/ui/jobs/{live_ui.job_id}/plots")

    def rates():
        return [float(td.get_attribute("data-value")) for td in
                d.find_elements(By.CSS_SELECTOR, "#rates tbody td:nth-child(5)")]
    head = d.find_elements(By.CSS_SELECTOR, "#rates thead button")[4]
    head.click()
    assert rates() == sorted(rates())
    head.send_keys(Keys.ENTER)
    assert rates() == sorted(rates(), reverse=True)
    names = d.find_elements(By.CSS_SELECTOR, "#rates thead button")[0]
    names.send_keys(Keys.ENTER)
    got = [td.text for td in d.find_elements(By.CSS_SELECTOR, "#rates tbody td:first-child")]
    assert got == sorted(got, key=str.lower)
    assert not csp_violations(d)


def test_unknown_addresses_are_html_pages(logged_in, live_ui):
    from selenium.webdriver.common.by import By

    d = logged_in
    job = live_ui.job_id
    for path, needle in (("/ui/jobs/job-nope", "no job 'job-nope'"),
                         (f"/ui/jobs/{job}/samples/s99999", "no annotated scene 's99999'"),
                         ("/ui/datasets/ds-nope", "no dataset 'ds-nope'"),
                         ("/ui/no/such/page", "there is no page /ui/no/such/page"),
                         (f"/ui/jobs/{job}/samples?page=0", "page")):
        d.get(live_ui.url + path)
        page = wait_for(d, lambda d: d.find_element(By.ID, "error-page"), what=f"error page {path}")
        assert needle in d.find_element(By.ID, "error-detail").text, (path, page.text)
        assert page.get_attribute("data-status") in ("404", "422")
        assert d.find_element(By.ID, "back-to-jobs").get_attribute("href").endswith("/ui/jobs")
    shot(d, "27-not-found")
    # The bare address leads to the UI.
    d.get(live_ui.url + "/")
    wait_for(d, lambda d: d.current_url.endswith("/ui/jobs"), what="redirect to the UI")


def test_the_job_page_fills_in_the_categories_after_association(logged_in, live_ui):
    from selenium.webdriver.common.by import By

    from dreammask.shared.chain import DEFAULT_CHAIN

    d = logged_in
    with live_ui.api() as c:
        r = c.post("/v1/jobs", json={"train_categories": ["person", "dog", "car"], "num_novel": 1,
                                     "images_per_category": 1, "image_size": 64, "seed": 3})
        assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    try:
        d.get(f"{live_ui.url}/ui/jobs/{job_id}")
        assert d.find_element(By.ID, "not-associated").is_displayed()
        d.execute_script("window.__stayed = true;")  # gone if the page reloads
        live_ui.run_until(DEFAULT_CHAIN["layout"].task)  # association only
        wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#job-categories table.novel tbody tr"), timeout=30,
                 what="categories without a reload")
        assert d.execute_script("return window.__stayed === true;")
        assert not d.find_elements(By.ID, "not-associated")
    finally:
        live_ui.run()


def test_make_screenshots_photographs_every_main_page(live_ui, tmp_path):
    """The capture step of `make screenshots` (deploy/tools/ui_screenshots.py), on this module's job."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    tool = Path(__file__).resolve().parents[2] / "deploy" / "tools" / "ui_screenshots.py"
    spec = importlib.util.spec_from_file_location("ui_screenshots", tool)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with live_ui.api() as c:
        sid = mod.pick_sample(c, live_ui.job_id)
    d = start_chromium(mod.WIDTH, mod.HEIGHT)
    try:
        files = mod.capture(d, live_ui.url, KEY, live_ui.job_id, live_ui.dataset_id, sid, tmp_path)
    finally:
        d.quit()
    assert [f.name for f in files] == [f"{n}.png" for n in mod.PAGES]
    for f in files:
        with Image.open(f) as im:
            assert im.width == mod.WIDTH and im.height > 500, f
            px = np.asarray(im.convert("RGB"), dtype=np.float32)
        assert px.std() > 10, f"{f.name} looks blank"  # a page, not an empty or error screen


def test_the_sample_page_shows_its_named_seeds_and_a_truncated_history(logged_in, live_ui):
    from selenium.webdriver.common.by import By

    d = logged_in
    sid = _summaries(live_ui)[-1].scene_id  # not the sample the keyboard test reviews
    store, limit = live_ui.rt.store, live_ui.rt.settings.review_history_limit
    rec = rv.SampleReview(job_id=live_ui.job_id, scene_id=sid)
    for i in range(limit + 3):
        rec.apply(rv.ReviewEvent(decision="accept" if i % 2 else "reject", who="alice/x"), keep=limit)
    store.put_json(rv.review(live_ui.job_id, sid), rec)
    try:
        d.get(f"{live_ui.url}/ui/jobs/{live_ui.job_id}/samples/{sid}")
        wait_for(d, lambda d: d.find_elements(By.ID, "provenance"), what="sample page")
        plan = live_ui.rt.tracker.plan(live_ui.job_id)
        seeds = {k: d.find_element(By.ID, f"seed-{k}") for k in ("job", "scene", "layout", "render")}
        assert seeds["job"].text == str(plan.job_seed) and seeds["scene"].text.startswith(str(plan.scene(sid).seed))
        assert all(el.is_displayed() and el.text[:1].isdigit() for el in seeds.values()), {k: e.text for k, e in seeds.items()}
        # Truncation shows in the history's summary, without opening it.
        summary = d.find_element(By.CSS_SELECTOR, "#review-history summary")
        assert summary.is_displayed() and "3 older ones not kept" in summary.text, summary.text
        assert f"the last {limit} decisions" in summary.text
        assert not csp_violations(d)
    finally:
        store.delete(rv.review(live_ui.job_id, sid))
