"""`bench/feature_cache.py --tiny`: deep-feature caching against the exact loop, every figure produced and
consistent with the run's own records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_feature_cache_bench_tiny(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "feature_cache.py"), "--tiny", "--steps", "6",
                           "--rounds", "1", "--intervals", "3"], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["bench"] == "feature_cache" and r["weights"] == "random" and r["images"] == 4
    assert set(r["intervals"]) == {"1", "3"}  # the exact loop is always measured beside
    iters = r["denoising_iterations"]
    assert iters == 7  # PNDM: one more iteration than steps
    exact, cached = r["intervals"]["1"], r["intervals"]["3"]
    assert exact["speedup"] == 1.0 and "image_diff_to_exact" not in exact
    assert (exact["full_unet_passes"], exact["shallow_unet_passes"]) == (iters, 0)
    # full passes at 0, 3, 6 and at 2, where the fusers go off (beta 0.3 of 7 iterations)
    assert (cached["full_unet_passes"], cached["shallow_unet_passes"]) == (4, 3)
    f = r["unet_flops"]
    assert 0 < f["shallow_pass_tflop_per_image"] < f["full_pass_tflop_per_image"]
    assert cached["unet_tflop_per_image"] < exact["unet_tflop_per_image"]
    d = cached["image_diff_to_exact"]
    assert d["max"] > 0 and 0 < d["mean"] <= d["max"] and d["psnr_db"] > 0
    assert cached["images_per_s"] > 0
    assert abs(cached["speedup"] - cached["images_per_s"] / exact["images_per_s"]) < 0.01
