"""The OpenAPI document: valid, every route documents its errors with a model and an example, bodies have
examples that the models accept, browse routes are typed, and /docs and /redoc load nothing from outside."""

from __future__ import annotations

import hashlib
import re

import pytest
from openapi_spec_validator import validate

from dreammask.services.api.docs_pages import ASSETS
from dreammask.shared.schemas import JobSpec
from dreammask.trainer.service.schemas import TrainingSpec


@pytest.fixture()
def doc(api):
    r = api.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def _operations(doc):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_document_validates(doc):
    validate(doc)
    assert len(doc["paths"]) >= 15


def test_every_route_documents_its_errors(doc):
    checked = 0
    for path, method, op in _operations(doc):
        codes = set(op["responses"])
        if not path.startswith("/v1/"):
            continue
        checked += 1
        want = {"401", "503"}
        if "{" in path:
            want.add("404")
        if op.get("parameters") or op.get("requestBody"):
            want.add("422")
        if op.get("requestBody"):
            want.add("413")
        if path.endswith(("/cancel", "/resume")):
            want.add("409")
        if "/files/" in path:
            want |= {"206", "416"}
        assert want <= codes, (method, path, sorted(want - codes))
        for code in codes:
            if code.startswith(("4", "5")):
                body = op["responses"][code]["content"]["application/json"]
                assert "schema" in body and "example" in body, (method, path, code)
    assert checked >= 17
    health = doc["paths"]
    assert "503" in health["/readyz"]["get"]["responses"]
    assert {"401", "404"} <= set(health["/metrics"]["get"]["responses"])


def test_error_models_are_named_schemas(doc):
    schemas = doc["components"]["schemas"]
    assert {"ErrorBody", "ValidationErrorBody", "UnavailableBody"} <= set(schemas)
    op = doc["paths"]["/v1/jobs"]["post"]
    assert op["responses"]["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/UnavailableBody")
    assert op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationErrorBody")


def test_browse_routes_are_typed(doc):
    def ref(path, method="get", code="200"):
        return doc["paths"][path][method]["responses"][code]["content"]["application/json"]["schema"].get("$ref", "")

    assert ref("/v1/jobs").endswith("/JobList")
    assert ref("/v1/jobs/{job_id}/scenes").endswith("/SceneList")
    assert ref("/v1/jobs/{job_id}/categories").endswith("/CategoriesView")
    assert ref("/v1/jobs/{job_id}/resume", "post", "202").endswith("/ResumeResult")
    assert ref("/v1/datasets/{dataset_id}").endswith("/DatasetView")
    assert ref("/v1/trainings").endswith("/TrainingList")
    assert ref("/v1/trainings/{training_id}/metrics").endswith("/MetricsLines")
    manifest = doc["components"]["schemas"]["DatasetManifest"]
    assert "checksums" in manifest["properties"]


@pytest.mark.parametrize("path, model", [("/v1/jobs", JobSpec), ("/v1/trainings", TrainingSpec)])
def test_specs_have_examples_the_models_accept(doc, path, model):
    examples = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert len(examples) >= 2
    for ex in examples.values():
        model(**ex["value"])


def test_docs_pages_use_only_packaged_assets(api):
    sums = dict(reversed(line.split()) for line in (ASSETS / "SHA256SUMS").read_text().splitlines())
    for page in ("/docs", "/redoc"):
        r = api.get(page)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        urls = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert urls, r.text
        for url in urls:
            assert url.startswith("/static/docs/"), (page, url)  # nothing from a CDN or a font service
            asset = api.get(url)
            assert asset.status_code == 200, url
            name = url.rsplit("/", 1)[1]
            assert hashlib.sha256(asset.content).hexdigest() == sums[name], name
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"} <= set(sums)
    versions = (ASSETS / "VERSIONS").read_text()
    assert "swagger-ui-dist@5." in versions and "redoc@2." in versions
