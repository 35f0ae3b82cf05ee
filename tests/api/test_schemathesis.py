"""Bounded property-based runs over the whole API, whatever the input, authenticated or not: no 5xx.
First schemathesis's strategies from the OpenAPI schema; then every route (the UI's too, which the schema
leaves out) with hostile values schemathesis does not generate: NaN, infinities and overflowing numbers
(JSON has no way to send them, yet clients do), integers past 64 bits, wrong types at every leaf of a valid
body, wrong content types and files in place of form fields."""

from __future__ import annotations

import json
from urllib.parse import quote

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreammask.services.api.main import create_app
from dreammask.shared.runtime import build_runtime
from dreammask.shared.settings import Settings

EXAMPLES_PER_OPERATION = 20
ROUTE_EXAMPLES = 25


def test_no_input_gives_a_server_error(tmp_path, redis_url, redis_client):
    # schemathesis calls the app as Starlette's test client does, with Host: testserver.
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", api_keys={"key-alice": "alice"},
                 max_scenes_per_job=100, public_base_url="http://api.test", allowed_hosts=["testserver"],
                 auth_max_failures=1000)
    app = create_app(s, build_runtime(s))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    server_errors, calls = [], []

    def run(op):
        @given(case=op.as_strategy(), authenticated=st.booleans())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case, authenticated):
            headers = {"Authorization": "Bearer key-alice"} if authenticated else None
            response = case.call(headers=headers)
            calls.append(response.status_code)
            if response.status_code >= 500:
                server_errors.append((op.label, response.status_code, response.text[:300]))

        call()

    for op in operations:
        run(op)
    assert server_errors == []
    assert len(calls) >= 5 * len(operations)
    assert {200, 401, 404, 422} <= set(calls)  # it reached the routes, not just the gate


# ------------------------------------------------------------ every route, hostile values

# Raw JSON tokens put in place of a value: numbers JSON cannot carry or that overflow, wrong types.
TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 40, "-" + "9" * 5000, "1e-400",
          "-1", "0", "2147483648", "9223372036854775808", '"x"', '""', "true", "null", "[]", "{}",
          '"\\ud800"', '{"a": NaN}', "[Infinity, 1]", '"' + "a" * 3000 + '"']
# Values for query and path parameters.
PARAMS = ["NaN", "Infinity", "-inf", "1e400", "9" * 60, "-1", "0", "", "x", "true", "../../etc/passwd",
          "s00000", "%", "ds-x", "1.5"]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                 "application/json; charset=utf-16", "application/xml", None]


def _routes(app):
    """(method, path template, query parameter names, path parameter names, has a body) of every route,
    the UI's and the included routers' too."""
    from fastapi.routing import APIRoute

    out = []

    def add(methods, path, dependant, body):
        for m in sorted(methods or ()):
            out.append((m, path, [p.alias or p.name for p in dependant.query_params],
                        [p.name for p in dependant.path_params], body))

    for r in app.routes:
        if isinstance(r, APIRoute):
            add(r.methods, r.path, r.dependant, r.body_field is not None)
        elif hasattr(r, "effective_route_contexts"):
            for c in r.effective_route_contexts():
                add(getattr(c, "methods", None), c.path, c.dependant, c.body_field is not None)
    return out


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list) and obj:
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    yield path


def _with_token(obj, path, token: str) -> str:
    """JSON text of `obj` with the value at `path` replaced by the raw token."""
    marker = "\u0000TOKEN\u0000"
    if not path:
        return token
    import copy

    doc = copy.deepcopy(obj)
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = marker
    return json.dumps(doc).replace(json.dumps(marker), token)


def _base_bodies():
    from dreammask.shared.schemas import JobSpec
    from dreammask.trainer.service.schemas import TrainingSpec

    job = JobSpec(train_categories=["dog", "cat"], num_novel=1, images_per_category=1, image_size=64)
    training = TrainingSpec(datasets=["ds-x"], tiny=True, iterations=2, overrides={"SOLVER.BASE_LR": 0.1})
    review = {"scene_id": "s00000", "instance_id": 1, "decision": "accept"}
    return {"/v1/jobs": job.model_dump(mode="json"), "/v1/trainings": training.model_dump(mode="json"),
            "/v1/jobs/{job_id}/reviews": review, "/ui/jobs/{job_id}/reviews": review,
            "/v1/datasets/{dataset_id}/versions": {"note": "v2"}}


def test_no_route_answers_5xx_to_hostile_values(tmp_path, redis_url, redis_client):
    """Every route (REST, UI, health), with NaN, infinities, huge integers and wrong types in bodies, query
    and path, wrong content types and files in form fields, with and without credentials: never a 5xx."""
    from dreammask.services.api.ui import session as ses

    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", api_keys={"key-alice": "alice"},
                 max_scenes_per_job=100, public_base_url="http://api.test", auth_max_failures=1000)
    rt = build_runtime(s)
    app = create_app(s, rt)
    client = TestClient(app, base_url="http://api.test", raise_server_exceptions=False)
    job = client.post("/v1/jobs", json={"train_categories": ["dog"], "num_novel": 1, "images_per_category": 1,
                                        "image_size": 64}, headers={"Authorization": "Bearer key-alice"})
    job_id = job.json()["job_id"]
    sess = ses.create(rt, s, "key-alice")
    ids = {"job_id": [job_id, "nope"], "dataset_id": [f"ds-{job_id}", "ds-nope"], "training_id": ["tr-nope"],
           "sid": ["s00000"], "name": ["s00000.jpg", "ui.css"], "path": ["images/s00000.png", "a/../b"],
           "version": ["2", "1"]}
    bodies = _base_bodies()
    routes = _routes(app)
    assert len(routes) >= 45, len(routes)
    server_errors, calls = [], []

    def run(method, path, query, path_params, has_body):
        @given(data=st.data())
        @settings(max_examples=ROUTE_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(data):
            url = path.replace(":path}", "}")
            for p in path_params:
                value = data.draw(st.sampled_from(ids.get(p, ["x"]) + PARAMS), label=p)
                url = url.replace("{" + p + "}", quote(value, safe="/") if value else "x")
            params = {q: data.draw(st.sampled_from(PARAMS), label=q) for q in query
                      if data.draw(st.booleans(), label=f"send {q}")}
            auth = data.draw(st.sampled_from(["none", "bearer", "session", "wrong"]), label="auth")
            headers, cookies = {}, {}
            if auth == "bearer":
                headers["Authorization"] = "Bearer key-alice"
            elif auth == "wrong":
                headers["Authorization"] = "Bearer key-wrong"
            elif auth == "session":
                cookies[ses.SESSION_COOKIE] = sess.sid
                headers["X-CSRF-Token"] = sess.csrf
            kw = {}
            if method in ("POST", "PUT", "PATCH"):
                ctype = data.draw(st.sampled_from(CONTENT_TYPES), label="content type")
                base = bodies.get(path, {"note": "x"})
                leaf = data.draw(st.sampled_from(list(_leaves(base))), label="leaf")
                token = data.draw(st.sampled_from(TOKENS), label="token")
                text = _with_token(base, leaf, token)
                if ctype == "multipart/form-data":
                    field = data.draw(st.sampled_from(["csrf_token", "api_key", "next", "note", "scene_id"]))
                    kw["files"] = {field: ("x.bin", text.encode(), "application/octet-stream")}
                    kw["data"] = {"csrf_token": sess.csrf, "note": token}
                elif ctype == "application/x-www-form-urlencoded":
                    kw["content"] = f"csrf_token={sess.csrf}&api_key={quote(token)}&note={quote(token)}".encode()
                    headers["Content-Type"] = ctype
                else:
                    kw["content"] = text.encode("utf-8", "surrogatepass")
                    if ctype:
                        headers["Content-Type"] = ctype
            r = client.request(method, url, params=params, headers=headers, cookies=cookies,
                               follow_redirects=False, **kw)
            calls.append(r.status_code)
            if r.status_code >= 500:
                server_errors.append((method, url, r.status_code, r.text[:300]))

        call()

    # Every leaf of every body, each with the values that used to break the API, as an authenticated
    # client would send them; then the random exploration over all routes.
    for method, path, *_ in routes:
        if method != "POST" or path not in bodies:
            continue
        url = path.replace("{job_id}", job_id).replace("{dataset_id}", f"ds-{job_id}")
        auth = ({"Authorization": "Bearer key-alice"} if path.startswith("/v1/")
                else {"X-CSRF-Token": sess.csrf})
        cookies = {ses.SESSION_COOKIE: sess.sid} if path.startswith("/ui/") else {}
        for leaf in _leaves(bodies[path]):
            for token in ("NaN", "-Infinity", "1e400", "1" + "0" * 40, '"x"', "{}", "[NaN]"):
                r = client.post(url, content=_with_token(bodies[path], leaf, token).encode(), cookies=cookies,
                                headers={**auth, "Content-Type": "application/json"}, follow_redirects=False)
                calls.append(r.status_code)
                if r.status_code >= 500:
                    server_errors.append(("POST", url, leaf, token, r.status_code, r.text[:300]))
    for route in routes:
        run(*route)
    client.close()
    assert server_errors == [], server_errors[:5]
    assert len(calls) >= 10 * len(routes)
    # It reached the routes, not just the gate: successes, refusals and validation errors alike.
    assert {200, 303, 401, 404, 422} <= set(calls), sorted(set(calls))
