"""Faults through real worker processes: a stage whose backend keeps failing retries with backoff, then
marks its scenes failed with the reason; the job ends instead of hanging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def test_failing_backend_retries_then_fails_scenes_with_reason(platform):
    env = {
        "PYTHONPATH": str(PLUGINS),
        "DREAMMASK_PLUGINS": json.dumps(["broken_backends"]),
        "DREAMMASK_DEPLOYED_BACKENDS": json.dumps({
            "association": ["embedding"], "layout": ["prior"], "synthesis": ["preview", "unreachable"],
            "masks": ["grabcut"], "scores": ["geometric"]}),
        "DREAMMASK_TASK_MAX_RETRIES": "2",
        "DREAMMASK_RETRY_BACKOFF_MAX_S": "1",
        # A transient fault that outlasts every retry: the supervisor re-enqueues once, then gives up.
        "DREAMMASK_STALL_AFTER_S": "2",
        "DREAMMASK_SUPERVISOR_INTERVAL_S": "1",
        "DREAMMASK_SUPERVISOR_MAX_HEALS": "1",
    }
    p = platform(env=env)
    job_id = p.submit({"train_categories": ["dog", "car", "tree"], "num_novel": 1, "images_per_category": 2,
                       "image_size": 64, "backends": {"synthesis": "unreachable"}})
    view = p.wait(job_id, timeout=180)
    assert view["state"] == "failed"
    assert view["stages"]["synthesis"]["failed"] == 2
    reasons = {e["reason"] for e in view["errors"]}
    assert all("ConnectionError" in r and "refused" in r for r in reasons), reasons
    assert "all scenes failed" in view["error"]
    assert any(t["reason"] and t["reason"].startswith("supervisor: no progress") for t in view["transitions"])
    # It was retried: the worker log shows the retries before the failure.
    log = (p.root / "logs" / "synthesis.log").read_text()
    assert log.count("Retry in") >= 2, log[-2000:]


def test_a_task_longer_than_the_visibility_timeout_runs_once_under_its_lease(platform):
    import re

    env = {
        "PYTHONPATH": str(PLUGINS),
        "DREAMMASK_PLUGINS": json.dumps(["broken_backends"]),
        "DREAMMASK_DEPLOYED_BACKENDS": json.dumps({
            "association": ["embedding"], "layout": ["prior"], "synthesis": ["preview", "slow"],
            "masks": ["grabcut"], "scores": ["geometric"]}),
        # The render takes 30 s: without renewals its message would be restored after 20 s.
        "DREAMMASK_VISIBILITY_TIMEOUT_S": "20",
        "DREAMMASK_LEASE_RENEW_S": "3",
        "DREAMMASK_RETRY_BACKOFF_MAX_S": "4",
        "DREAMMASK_SYNTHESIS_BATCH_SIZE": "2",
    }
    p = platform(env=env)
    job_id = p.submit({"train_categories": ["dog", "car", "tree"], "num_novel": 1, "images_per_category": 2,
                       "image_size": 64, "backends": {"synthesis": "slow"}})
    view = p.wait(job_id, timeout=240)
    assert view["state"] == "succeeded", view
    log = (p.root / "logs" / "synthesis.log").read_text()
    received = re.findall(r"Task dreammask\.synthesis\.render\[([0-9a-f-]+)\] received", log)
    assert len(received) == 1, log[-3000:]  # delivered once, never restored while it ran
    assert "could not start the lease" not in log
