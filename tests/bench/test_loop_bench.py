"""`bench/loop.py` on tiny settings: both arms run every round from the seed's shared round-0 model through the
training service's runner, the loop arm allocates by the rule on the previous round's validation figures and
the uniform arm evenly, with the same budget; the paired statistics match the per-seed figures and the last
line is one JSON object. No figure of merit is asserted (a few iterations learn nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreammask.shared import loops as lp

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_tiny_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "loop.py"), "--seeds", "2", "--rounds", "2",
                           "--budget", "7", "--base-iters", "2", "--iters", "1", "--jobs", "2"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == "loop" and result["seeds"] == 2 and result["rounds"] == 2
    targets = ["kite", "awning", "lamp", "bench", "ball"]
    for seed in (0, 1):
        base = result["round0_val"][str(seed)]
        for arm in ("loop", "uniform"):
            rounds = result["rounds_detail"][f"{seed}/{arm}"]
            assert len(rounds) == 2 and all(sum(r["allocation"].values()) == 7 for r in rounds)
            previous = [base] + [r["val"] for r in rounds[:-1]]
            for r, prev in zip(rounds, previous):
                if arm == "loop":
                    assert r["allocation"] == lp.allocate(7, prev, floor=0.05).counts
                else:
                    assert r["allocation"] == lp.uniform(7, targets)
    for metric in ("weakest_iou", "min_iou", "mean_iou"):
        d = result["loop_minus_uniform"][metric]
        diffs = [result["per_seed"][f"{s}/loop"][metric] - result["per_seed"][f"{s}/uniform"][metric] for s in (0, 1)]
        assert d["n"] == 2 and abs(d["mean"] - sum(diffs) / 2) < 0.01
        assert d["lo"] <= d["mean"] <= d["hi"]
    assert result["load_avg_start"] >= 0 and result["seconds"] > 0
