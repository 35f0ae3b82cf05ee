"""A bounded property-based run over the whole API (schemathesis strategies from the OpenAPI schema,
driven by hypothesis): whatever the input, authenticated or not, no 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreammask.services.api.main import create_app
from dreammask.shared.runtime import build_runtime
from dreammask.shared.settings import Settings

EXAMPLES_PER_OPERATION = 20


def test_no_input_gives_a_server_error(tmp_path, redis_url, redis_client):
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", api_keys={"key-alice": "alice"},
                 max_scenes_per_job=100, public_base_url="http://api.test")
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
