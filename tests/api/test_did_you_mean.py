"""A misspelt field gets a 422 naming it and the closest field the schema has at that place."""

from __future__ import annotations

from dreammask.services.api.suggest import closest_field
from dreammask.shared.schemas import JobSpec
from dreammask.trainer.service.schemas import TrainingSpec

BASE = {"train_categories": ["person", "dog"]}


def _msgs(r) -> dict:
    assert r.status_code == 422, r.text
    return {"/".join(map(str, d["loc"])): d["msg"] for d in r.json()["detail"]}


def test_misspelt_fields_at_every_depth_get_a_suggestion(api, alice):
    r = api.post("/v1/jobs", json={**BASE, "num_novl": 2, "thresholds": {"min_scor": 0.4},
                                   "backends": {"synthesiss": "preview"}}, headers=alice)
    msgs = _msgs(r)
    assert msgs["body/num_novl"].endswith("did you mean 'num_novel'?")
    assert msgs["body/thresholds/min_scor"].endswith("did you mean 'min_score'?")
    assert msgs["body/backends/synthesiss"].endswith("did you mean 'synthesis'?")
    r = api.post("/v1/trainings", json={"datasets": ["ds-x"], "iteratons": 3}, headers=alice)
    assert _msgs(r)["body/iteratons"].endswith("did you mean 'iterations'?")


def test_nothing_close_means_no_guess(api, alice):
    msgs = _msgs(api.post("/v1/jobs", json={**BASE, "zzzz": 1}, headers=alice))
    assert msgs["body/zzzz"] == "Extra inputs are not permitted"


def test_closest_field_walks_models_lists_and_optionals():
    assert closest_field(JobSpec, [], "imagesize") == "image_size"
    assert closest_field(JobSpec, ["synthesis"], "step") == "steps"
    assert closest_field(JobSpec, ["thresholds"], "min_kept_fracton") == "min_kept_fraction"
    assert closest_field(TrainingSpec, [], "real_dataset") == "real_datasets"
    assert closest_field(JobSpec, ["no_such_field"], "steps") is None
