"""`bench/annotation.py` on test-sized models: every figure it reports is produced and consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_annotation_bench_tiny(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--sam", "tiny", "--clip", "tiny", "--images", "2", "--boxes", "3", "--size", "96",
            "--repeats", "1", "--decoder-repeats", "1"]
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "annotation.py"), *args], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["bench"] == "annotation" and r["images"] == 2 and r["boxes_per_image"] == 3
    parts = r["breakdown_s_per_image"]
    assert all(v > 0 for v in parts.values())
    # the parts are timed inside the whole annotation, so they cannot add up to more than it
    assert sum(parts.values()) <= r["annotation_s_per_image"] * 1.001
    assert r["annotation_to_encoder_ratio"] > 1 and r["meets_goal"] == (r["annotation_to_encoder_ratio"] <= 1.15)
    assert r["decoder_stock_ms"] > 0 and r["decoder_per_box_ms"] > 0 and r["decoder_speedup_vs_stock"] > 0
    assert r["encoder_stock_s_per_image"] > 0 and r["encoder_sdpa_s_per_image"] > 0
