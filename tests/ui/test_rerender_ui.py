"""The sample page's re-render action: a form behind CSRF, blank fields keep the sample's values, the new job
links back to its origin and the origin lists its re-renders."""

from __future__ import annotations

import re

from test_ui_server import login, page_csrf

from dreammask.shared import keys
from dreammask.shared.schemas import RenderRecord


def test_rerender_from_the_sample_page(ui, curated_job):
    job_id, sid = curated_job["job_id"], "s00001"
    login(ui, "key-alice")
    page = ui.get(f"/ui/jobs/{job_id}/samples/{sid}")
    assert page.status_code == 200
    form = re.search(r'<form method="post" action="/ui/jobs/[^"]+/rerender" id="rerender-form".*?</form>', page.text,
                     re.S).group(0)
    origin = ui.rt.store.get_model(keys.render_record(job_id, sid), RenderRecord)
    assert f'placeholder="{origin.seed}"' in form and f'placeholder="{origin.width}"' in form
    assert 'name="csrf_token"' in form and " style=" not in form
    assert "packages" in page.text and "torch" in page.text  # the render's pinned environment

    url = f"/ui/jobs/{job_id}/samples/{sid}/rerender"
    assert ui.post(url, data={"seed": ""}).status_code == 403  # no CSRF token: nothing made
    assert list(ui.rt.store.list(keys.rerenders_prefix(job_id, sid))) == []
    token = page_csrf(page.text)
    bad = ui.post(url, data={"csrf_token": token, "steps": "0"}, headers={"Accept": "text/html"})
    assert bad.status_code == 422 and "steps" in bad.text
    r = ui.post(url, data={"csrf_token": token, "seed": "", "steps": "", "guidance_scale": "", "image_size": ""},
                follow_redirects=False)
    assert r.status_code == 303
    new = r.headers["location"].rsplit("/", 1)[1]
    assert r.headers["location"] == f"/ui/jobs/{new}"
    ui.run()
    job_page = ui.get(f"/ui/jobs/{new}")
    assert f'href="/ui/jobs/{job_id}/samples/{sid}"' in job_page.text and "Re-renders" in job_page.text
    new_sample = ui.get(f"/ui/jobs/{new}/samples/s00000")
    assert new_sample.status_code == 200
    assert re.search(r'id="rerender-of">A re-render of <a href="/ui/jobs/' + job_id + f'/samples/{sid}"',
                     new_sample.text) and "unchanged" in new_sample.text
    assert f'href="/ui/jobs/{new}"' in ui.get(f"/ui/jobs/{job_id}/samples/{sid}").text
    record = ui.rt.store.get_model(keys.render_record(new, "s00000"), RenderRecord)
    assert record.seed == origin.seed and record.origin.job_id == job_id
