"""The short chaos run (bench/chaos.py --short): real Redis, S3 on loopback behind a fault proxy, real worker
processes and the supervisor; kill -9 of workers and a Redis FLUSHDB mid-job. Every job ends by itself
with nothing lost, nothing duplicated, nothing failed, counters equal to the outputs, and every
annotated scene in the dataset or dropped by the selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


@pytest.mark.timeout(1000)
def test_jobs_heal_themselves_after_worker_kills_and_a_redis_flush(shared_cache_dir):
    env = dict(os.environ, DREAMMASK_CACHE_DIR=str(shared_cache_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run([sys.executable, str(BENCH), "--short"], capture_output=True, text=True, env=env,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    rows = {r["fault"]: r for r in summary["rows"]}
    assert set(rows) == {"kill9", "flushdb"}
    for fault, r in rows.items():
        assert r["state"] == "succeeded", (fault, r)
        assert (r["lost"], r["duplicated"], r["failed"]) == (0, 0, 0), (fault, r)
        assert not r["person_needed"] and r["counters_exact"], (fault, r)
        assert r["dataset_images"] > 0, (fault, r)
        # every annotated scene is in the dataset or was dropped by the selection, with its reason
        assert r["curation_complete"], (fault, r)
    # The Redis flush left the job with no queued work: only the supervisor could finish it.
    assert rows["flushdb"]["supervisor_interventions"] >= 1


@pytest.mark.timeout(1000)
def test_quota_and_deletion_cases_lose_nothing_of_anyone_else(shared_cache_dir):
    """bench/chaos.py's tenant cases on the real platform: a submission burst gets exactly the job quota and
    429s naming it, the other tenant is unaffected, a slot frees when jobs end; a job deleted while it runs
    leaves nothing behind, lands nothing afterwards, and every other file keeps its exact bytes."""
    env = dict(os.environ, DREAMMASK_CACHE_DIR=str(shared_cache_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run([sys.executable, str(BENCH), "--short", "--faults", "quota,deletion", "--scenes", "12"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    cases = {c["case"]: c for c in summary["cases"]}
    quota = cases["quota"]
    assert quota["accepted"] == quota["quota_active_jobs"] and quota["refused_429"] == quota["submitted"] - quota["accepted"]
    assert quota["quotas_named"] == ["active_jobs"] and quota["other_status"] == []
    assert quota["other_tenant_accepted"] and quota["jobs_succeeded"] == quota["accepted"] + 1
    assert quota["accepted_after_jobs_ended"]
    deleted = cases["deletion"]
    assert deleted["status"] == 200 and deleted["deleted_objects"] > 0 and deleted["was_running"]
    assert deleted["objects_left"] == 0 and not deleted["victim_listed"]
    assert deleted["others_files"] > 0 and deleted["others_changed_or_lost"] == 0 and deleted["others_new_files"] == 0
    assert deleted["kept_job_state"] == deleted["other_tenant_job_state"] == "succeeded"
    assert summary["other_tenant_lost"] == 0
