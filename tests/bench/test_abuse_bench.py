"""`bench/abuse.py --fast`: every slow connection is cut by its deadline (never before it) or refused by the
per-address cap, /healthz keeps answering through every flood, the floods turn into 429s after exactly
the configured number of failures, a login form cannot be replayed, and a burst of submissions gets exactly
the job quota. (Its figures are timings; this test asserts none of them.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_abuse_bench_fast(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "abuse.py"), "--fast"], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["bench"] == "abuse" and r["fast"] is True
    for case in ("slow_headers", "slow_body"):
        c = r[case]
        assert c["never_cut"] == 0 and c["other"] == [], c
        assert c["cut_by_deadline"] + c["refused_by_cap"] == c["connections"], c
        assert c["cut_by_deadline"] > 0 and c["cut_before_deadline"] == 0, c
        # 4 addresses x a cap of 8: what is over the cap is refused at once, the rest cut at the deadline.
        assert c["refused_by_cap"] == c["connections"] - 4 * int(r["limits"]["max_connections_per_client"]), c
    limit = int(r["limits"]["auth_max_failures"])
    login, bearer = r["login_flood"], r["bearer_flood"]
    assert login["first_429_at_attempt"] == limit and login["codes"]["303"] == limit - 1
    assert login["codes"]["429"] == login["attempts"] - (limit - 1) and login["replayed_form"] == 403
    assert bearer["first_429_at_attempt"] == limit and bearer["codes"]["401"] == limit - 1
    burst = r["submit_burst"]
    assert burst["codes"]["202"] == int(r["limits"]["quota_active_jobs"])
    assert burst["refused_by_quota"] + burst["refused_by_connection_cap"] == burst["codes"]["429"]
    assert burst["quotas_named"] == ["active_jobs"] and burst["retry_after_s"] == [60]
    # /healthz answered every probe during every case (how fast is the figure, not a test).
    assert r["healthz_failures"] == 0
    assert all(r[c]["healthz_requests"] > 0 for c in ("slow_headers", "slow_body", "login_flood", "bearer_flood",
                                                       "submit_burst"))
