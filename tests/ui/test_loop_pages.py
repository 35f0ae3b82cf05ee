"""The closed loop's pages: the list, the per-class curves across rounds (server-side SVG), the rounds table, the
cancel action behind CSRF, tenancy; and in Chromium, the page under the UI's CSP with nothing blocked."""

from __future__ import annotations

import re

import pytest
from browser import MISSING, csp_violations, find_browser, log_in, shot, wait_for
from test_ui_server import login, page_csrf

from dreammask.shared import loops as lp

SPEC = lp.LoopSpec(name="toy loop", train_categories=["sky", "grass", "cat", "table"], target=["kite", "lamp"],
                   rounds=2, images_per_round=6, real_datasets=["toy_world_train"], eval_dataset="toy_world_val",
                   training={"iterations": 3, "tiny": True})
FIGURES = [{"sky": 80.0, "cat": 40.0, "kite": 0.0, "lamp": 10.0},
           {"sky": 82.5, "cat": 41.0, "kite": 30.0, "lamp": 12.0},
           {"sky": 83.0, "cat": 39.5, "kite": 45.0, "lamp": None}]


def make_loop(store, redis, tenant: str = "alice", finished_rounds: int = 3) -> str:
    st = lp.create_loop(store, redis, tenant, SPEC, ["sky", "grass", "cat", "table"])
    for n in range(finished_rounds):
        lp.write_round(store, lp.LoopRound(
            loop_id=st.loop_id, round=n, per_class=FIGURES[n], finished_at=lp.utcnow(),
            allocation=None if n == 0 else {"kite": 2, "lamp": 4}, job_id=None if n == 0 else f"j-round{n}",
            dataset_id=None if n == 0 else f"ds-j-round{n}", training_id=f"tr-round{n}",
            target_mean_iou=5.0 + n, target_min_iou=float(n)))
    st.round, st.step = finished_rounds - 1, "training"
    lp.transition(store, st, lp.LoopState.running, "round 2: training")
    return st.loop_id


def test_the_loop_page_draws_every_class_round_by_round(ui):
    loop_id = make_loop(ui.rt.store, ui.rt.redis)
    login(ui, "key-alice")
    listing = ui.get("/ui/loops")
    assert listing.status_code == 200 and f'href="/ui/loops/{loop_id}"' in listing.text and "2 / 2" in listing.text
    r = ui.get(f"/ui/loops/{loop_id}")
    assert r.status_code == 200
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assert "<script>" not in html and " style=" not in html  # nothing inline: the CSP allows none
    svg = re.search(r'<svg[^>]*class="chart curves".*?</svg>', html, re.S).group(0)
    # One series per class, the steered ones solid and coloured, the others dashed grey.
    for name in ("kite", "lamp", "sky", "cat"):
        assert f'data-class="{name}"' in svg
    kite = re.search(r'<g class="series" data-class="kite">.*?</g>', svg, re.S).group(0)
    assert "stroke-dasharray" not in kite.split("<line")[0] and "#8a8f98" not in kite
    assert [float(v) for v in re.findall(r'data-value="([\d.]+)"', kite)] == [0.0, 30.0, 45.0]
    sky = re.search(r'<g class="series" data-class="sky">.*?</g>', svg, re.S).group(0)
    assert "stroke-dasharray" in sky and "#8a8f98" in sky
    lamp = re.search(r'<g class="series" data-class="lamp">.*?</g>', svg, re.S).group(0)
    assert re.findall(r'data-round="(\d)"', lamp) == ["0", "1"]  # round 2 did not measure it: no dot
    table = re.search(r'<table class="per-class".*?</table>', html, re.S).group(0)
    assert re.search(r'data-class="lamp" class="target">.*?<td class="num">10.0</td><td class="num">12.0</td>'
                     r'<td class="num">n/a</td>', table, re.S)
    rounds = re.search(r'<table class="rounds".*?</table>', html, re.S).group(0)
    assert "kite 2, lamp 4" in rounds and 'href="/ui/jobs/j-round1"' in rounds and "tr-round2" in rounds
    assert 'data-poll="/ui/loops/' in html and "data-live" in ui.get(f"/ui/loops/{loop_id}/body").text


def test_cancel_needs_the_csrf_token_and_loops_are_the_tenants_own(ui):
    loop_id = make_loop(ui.rt.store, ui.rt.redis, finished_rounds=1)
    login(ui, "key-bob")
    assert ui.get(f"/ui/loops/{loop_id}", headers={"Accept": "text/html"}).status_code == 404
    assert loop_id not in ui.get("/ui/loops").text
    login(ui, "key-alice")
    assert ui.post(f"/ui/loops/{loop_id}/cancel", data={}).status_code == 403
    assert not ui.rt.store.exists(lp.cancel_key(loop_id))
    token = page_csrf(ui.get(f"/ui/loops/{loop_id}").text)
    r = ui.post(f"/ui/loops/{loop_id}/cancel", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/ui/loops/{loop_id}"
    assert ui.rt.store.exists(lp.cancel_key(loop_id))


@pytest.mark.integration
@pytest.mark.browser
@pytest.mark.skipif(find_browser() is None, reason=MISSING)
def test_the_loop_page_in_a_browser(live_ui):
    from browser import start_chromium
    from selenium.webdriver.common.by import By

    loop_id = make_loop(live_ui.rt.store, live_ui.rt.redis)
    d = start_chromium(1400, 900)
    try:
        log_in(d, live_ui.url, "key-alice", then="/ui/loops")
        d.find_element(By.LINK_TEXT, loop_id).click()
        wait_for(d, lambda d: d.find_element(By.CSS_SELECTOR, "svg.curves"), what="the curves")
        dots = d.find_elements(By.CSS_SELECTOR, 'svg.curves g[data-class="kite"] circle')
        assert len(dots) == 3 and all(c.is_displayed() for c in dots)
        assert d.find_element(By.ID, "cancel-loop").is_displayed()
        shot(d, "loop")
        assert csp_violations(d) == []
    finally:
        d.quit()
