"""`bench/iat_toy.py` on tiny settings: every arm trains, is evaluated and measured, the statistics and the
decision rule of docs/benchmarks.md are applied, the figure is drawn and the last line is one JSON object.
No figure of merit is asserted (a few iterations learn nothing); the rule's logic is tested on its own."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("iat_toy_bench", ROOT / "bench" / "iat_toy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_ci_is_the_t_interval_of_the_differences():
    bench = _bench()
    ci = bench.paired_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2 df) * sd / sqrt(n)
    assert ci["n"] == 3 and ci["mean"] == 2.0
    assert math.isclose(ci["lo"], 2.0 - half, rel_tol=1e-9) and math.isclose(ci["hi"], 2.0 + half, rel_tol=1e-9)
    assert bench.paired_ci([float("nan"), 4.0, 4.0])["n"] == 2  # a missing class (NaN) drops out
    assert bench.paired_ci([5.0])["lo"] == float("-inf")  # one seed: no interval


def _c(mean, lo, hi):
    return {"mean": mean, "lo": lo, "hi": hi, "n": 6}


def test_decision_rule():
    bench = _bench()
    flat = _c(0.0, -1.0, 1.0)
    comparisons = {
        "oracle": {"novel_mIoU": _c(25.0, 12.0, 38.0), "base_mIoU": flat},
        "query-1": {"novel_mIoU": _c(4.0, 1.0, 7.0), "base_mIoU": _c(-1.0, -3.0, 1.0)},  # helps
        "query-10": {"novel_mIoU": _c(8.0, 2.0, 14.0), "base_mIoU": _c(-6.0, -9.0, -3.0)},  # base lost
        "clip-1": {"novel_mIoU": _c(1.0, -2.0, 4.0), "base_mIoU": flat},  # nothing shown
        "clip-10": {"novel_mIoU": _c(-9.0, -14.0, -4.0), "base_mIoU": flat},  # hurts
    }
    v = bench.verdicts(comparisons)
    assert v["valid"] and v["default_feature_source"] == "query"
    assert v["arms"] == {"query-1": "helps", "query-10": "helps novel, hurts base",
                         "clip-1": "no detectable effect", "clip-10": "hurts"}
    comparisons["clip-1"]["novel_mIoU"] = _c(6.0, 0.5, 11.5)  # clip helps more than query: it becomes default
    assert bench.verdicts(comparisons)["default_feature_source"] == "clip"
    comparisons["oracle"]["novel_mIoU"] = _c(9.0, 3.0, 15.0)  # gap under 10: nothing is judged
    v = bench.verdicts(comparisons)
    assert not v["valid"] and v["default_feature_source"] == "query"
    assert all(x.startswith("no conclusion") for x in v["arms"].values())


@pytest.mark.slow
def test_iat_toy_bench_runs_every_part_on_tiny_settings(tmp_path):
    figure = tmp_path / "per_class.png"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "bench" / "iat_toy.py"), "--arms", "off,oracle,query-10,clip-10",
           "--seeds", "2", "--iters", "4", "--batch", "2", "--real-images", "3", "--synthetic-images", "3",
           "--test-images", "2", "--probe-images", "4", "--jobs", "2", "--figure", str(figure)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["bench"] == "iat_toy" and out["arms"] == ["off", "oracle", "query-10", "clip-10"]
    runs = out["per_run"]
    assert sorted((r["arm"], r["seed"]) for r in runs) == sorted(
        (a, s) for a in out["arms"] for s in (0, 1))
    for r in runs:
        assert set(r["per_class"]) == {"sky", "grass", "cat", "table", "kite", "awning"}
        assert -1.0 <= r["base_proto_cos"] <= 1.0 and 0.0 <= r["probe_acc"] <= 1.0
        # the SRA loss is logged, unweighted, only where IAT is on (its bank fills from the real images)
        assert (r["mean_loss_sra"] > 0) == r["arm"].startswith(("query", "clip"))
    assert set(out["vs_off"]) == {"oracle", "query-10", "clip-10"}
    assert set(out["vs_off"]["query-10"]["novel_mIoU"]) == {"mean", "lo", "hi", "n"}
    assert set(out["decision"]["arms"]) == {"query-10", "clip-10"}
    assert out["decision"]["default_feature_source"] in ("query", "clip")
    assert figure.stat().st_size > 0
