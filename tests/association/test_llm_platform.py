"""A job naming the `llm` backends, through the real API, Celery workers and object storage, against the
scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import json

import pytest
from llm_testdata import TRAIN

from dreammask.shared import keys
from dreammask.shared.schemas import CategorySet, SceneLayout

pytestmark = pytest.mark.integration

JOB = {
    "train_categories": TRAIN,
    "num_novel": 2,
    "images_per_category": 2,
    "image_size": 128,
    "seed": 11,
    "backends": {"association": "llm", "layout": "llm"},
}


def llm_env(base_url: str) -> dict[str, str]:
    """What a deployment sets for the association worker (and the API, which checks job specs)."""
    return {
        "DREAMMASK_DEPLOYED_BACKENDS": json.dumps({
            "association": ["embedding", "llm"], "layout": ["prior", "llm"], "synthesis": ["preview"],
            "masks": ["grabcut"], "scores": ["geometric"],
        }),
        "DREAMMASK_LLM_BASE_URL": base_url,
        "DREAMMASK_LLM_MODEL": "fake-model",
        "DREAMMASK_LLM_BACKOFF_BASE_S": "0.05",
        "DREAMMASK_CNA_ROUNDS": "3",
        "DREAMMASK_CNA_MIN_SUPPORT": "2",
    }


def test_job_with_llm_backends_runs_end_to_end(platform, fake_llm):
    p = platform(env=llm_env(fake_llm.base_url))
    job_id = p.submit(JOB)
    view = p.wait(job_id, timeout=300)
    assert view["state"] == "succeeded", (view, p.tail_logs())

    cats = p.store.get_model(keys.categories(job_id), CategorySet)
    assert cats.backend == "llm" and len(cats.novel) == 2
    assert all(c.source == "llm" and c.support >= 2 and c.nearest_train in TRAIN for c in cats.novel)
    assert any("self-consistency" in d["reason"] for d in cats.dropped)

    rounds = [r for r in fake_llm.requests if r["task"] == "associate"]
    layouts = [r for r in fake_llm.requests if r["task"] == "layout"]
    assert len(rounds) == 3 and len(layouts) == 4
    for i in range(4):
        lay = p.store.get_model(keys.layout(job_id, keys.scene_id(i)), SceneLayout)
        assert lay.backend == "llm"
        assert lay.novel_category == cats.novel[i // 2].name
        assert any(o.category == lay.novel_category and o.is_novel for o in lay.objects)
    # The two scenes of one category were sampled with different seeds, so they differ.
    assert len({r["seed"] for r in layouts}) == 4
    assert view["stages"]["synthesis"]["done"] == 4


def test_unusable_llm_output_fails_the_job_with_its_reason(platform, fake_llm):
    fake_llm.script({"task": "associate"}, [{"reply": "As an AI language model, I cannot list categories."}],
                    repeat_last=True)
    p = platform(env=llm_env(fake_llm.base_url), services=("association",))
    job_id = p.submit(JOB)
    view = p.wait(job_id, timeout=180)
    assert view["state"] == "failed"
    assert "LLM rounds gave a usable reply" in view["error"] and "not JSON" in view["error"], view["error"]
