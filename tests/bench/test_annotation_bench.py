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
            "--repeats", "1", "--decoder-repeats", "1", "--tasks", "2", "--clip-choices", "tiny",
            "--mask-stats", "--blob-masks"]
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "annotation.py"), *args], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["bench"] == "annotation" and r["images"] == 2 and r["boxes_per_image"] == 3 and r["tasks_steady"] == 2
    # the floor: the encoder and CLIP's image encoder on the task's 2 x 3 x 2 crops
    assert r["clip_crops"] == 12
    assert abs(r["floor_s_per_image"] - r["encoder_s_per_image"] - r["clip_s_per_image"]) < 2e-4
    for key in ("single_task", "steady"):  # the per-image figures are rounded to 1e-4 s
        t, f = r[f"{key}_s_per_image"], r["floor_s_per_image"]
        assert (t - 5e-5) / (f + 5e-5) <= r[f"{key}_ratio"] <= (t + 5e-5) / (f - 5e-5)
    # two tasks in flight on the same tasks; the CPU worker runs one at a time, so its goal is judged on that
    assert r["in_flight"] == 2 and len(r["steady_in_flight_task_s"]) == 2 and r["steady_in_flight_ratio"] > 0
    one, two = r["steady_s_per_image"], r["steady_in_flight_s_per_image"]
    assert (one - 5e-5) / (two + 5e-5) <= r["steady_in_flight_speedup"] <= (one + 5e-5) / (two - 5e-5)
    assert r["worker_tasks_in_flight"] == 1 and r["worker_steady_ratio"] == r["steady_ratio"]
    assert r["meets_goal_steady"] == (r["steady_ratio"] <= 1.15)
    assert r["meets_goal"] == (max(r["single_task_ratio"], r["steady_ratio"]) <= 1.15)
    assert len(r["steady_task_s"]) == 2
    steps = r["steps_per_image"]
    assert {"encoder", "decoder", "clip"} <= set(steps["device_s"]) and all(v > 0 for v in steps["device_s"].values())
    assert {"cleanup", "rle", "crops"} <= set(steps["host_s"])
    # on the CPU the steps run one after the other inside the task: they cannot add up to more than it
    assert sum(steps["device_s"].values()) + steps["host_s"]["cleanup"] <= steps["wall_s"] * 1.001
    assert abs(steps["device_busy_s"] + steps["device_idle_s"] - steps["wall_s"]) < 1e-4
    assert steps["d2h_copies"] == 1  # the score table; the CPU copies nothing else
    assert r["decoder_stock_ms"] > 0 and r["decoder_per_box_ms"] > 0 and r["decoder_speedup_vs_stock"] > 0
    assert r["encoder_stock_s_per_image"] > 0 and r["encoder_sdpa_s_per_image"] > 0
    assert set(r["backends"]) == {"sam", "clip"} and r["backends"]["sam"]["encoder_s"] > 0
    c = r["clip_choices_per_image"]["tiny"]
    assert 0 < c["one_crop_s"] and 0 < c["two_crops_s"] and c["two_crops_to_sam_encoder"] > 0
    m = r["mask_stats"]
    assert m["masks"] == 6 and 0 <= m["foreground_fraction_mean"] <= 1 and m["components_per_mask_max"] >= 0
    b = r["blob_masks"]
    # the blobs: one ellipse with a hole, and a speck at the box's corner (two components)
    assert b["mask_stats"]["components_per_mask_median"] == 2 and b["steady_ratio"] > 0
