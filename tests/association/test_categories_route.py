"""End to end: a job through the API and a real association worker; its categories route shows what the
shared lexical screen dropped, each with its reason, and each proposal's thing/stuff decision."""

from __future__ import annotations

import time

import pytest

from dreammask.shared import keys
from dreammask.shared.schemas import CategorySet

pytestmark = pytest.mark.integration


def _categories(p, job_id: str, timeout: float = 180.0, **params) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = p.client.get(f"/v1/jobs/{job_id}/categories", params=params)
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 404, r.text
        time.sleep(0.5)
    raise AssertionError(f"no categories after {timeout} s\n{p.tail_logs()}")


def test_categories_route_lists_dropped_candidates_with_reasons(platform):
    p = platform(services=("association",))  # the categories are written before any later stage runs
    job_id = p.submit({"train_categories": ["person", "dog", "car", "cup"], "num_novel": 6,
                       "images_per_category": 1, "image_size": 96, "seed": 5})

    plain = _categories(p, job_id)
    assert "dropped" not in plain and plain["dropped_count"] > 0
    assert len(plain["novel"]) == 6
    assert all(isinstance(n["isthing"], bool) for n in plain["novel"])

    full = _categories(p, job_id, include="dropped")
    assert len(full["dropped"]) == plain["dropped_count"]
    why = {d["name"]: d["reason"] for d in full["dropped"]}
    # Examples of each rule, from the shipped vocabulary's names.
    assert why["dog"] == "synonym of dog (same name)"
    assert why["woman"] == "kind of person (WordNet)"
    assert why["bulldog"] == "kind of dog (WordNet)"
    assert why["mug"] == "kind of cup (WordNet)"
    assert any(r.startswith("generalises ") for r in why.values())
    assert any(r.startswith("duplicate of ") for r in why.values())
    novel = {n["name"] for n in full["novel"]}
    assert not novel & set(why)

    # The durable record holds the same: isthing on each proposal, for the exports.
    stored = p.store.get_model(keys.categories(job_id), CategorySet)
    assert [n.isthing for n in stored.novel] == [n["isthing"] for n in plain["novel"]]

    r = p.client.get(f"/v1/jobs/{job_id}/categories", params={"include": "everything"})
    assert r.status_code == 422 and "include" in r.text and "dropped" in r.text
