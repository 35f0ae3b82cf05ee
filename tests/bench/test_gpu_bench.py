"""`bench/gpu.py --tiny`: the prepared GPU check runs end to end on the CPU with test-sized models, so a
change in the synthesis, annotation or trainer code that would break it on a borrowed GPU fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_tiny_runs_every_part(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--budget-s", "600",
                           "--out", str(out)], capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["bench"] == "gpu" and last["errors"] == {}
    assert json.loads(out.read_text())["gligen"] == last["gligen"]

    g = last["gligen"]
    assert g["diffusers_batch1_images_per_s"] > 0
    assert set(g["ours"]) == {"1", "2", "4"} and all(v["images_per_s"] > 0 for v in g["ours"].values())
    assert g["best_over_diffusers_batch1"] > 0

    a = last["annotation"]  # the GPU worker's configuration on the CPU: a host pool, crops cut "on the device"
    assert a["host_threads"] == 2 and a["clip_crops_on_device"] and a["encoder_batch_size"] == 2
    assert a["decoder_boxes_per_call"] >= 64  # tiny embedding: all at once
    assert a["floor_s"] > 0 and a["single_task_ratio"] > 0 and a["steady_ratio"] > 0 and a["tasks_steady"] == 4
    steps = a["steps_single_task"]
    assert {"encoder", "decoder", "crops", "clip"} <= set(steps["device_s"]) and steps["device_idle_s"] >= 0
    assert steps["d2h_copies"] == 1 and {"cleanup", "rle"} <= set(steps["host_s"])
    assert a["backends"]["sam"]["encoder_s"] > 0 and a["backends"]["clip"]["encoder_s"] > 0
    assert a["mask_stats"]["masks"] == 32 and a["blob_masks"]["mask_stats"]["components_per_mask_median"] == 2
    assert set(a["encoder_images_per_s_by_batch"]) == {"1", "4"} and a["encoder_sdpa_speedup"] > 0
    assert a["clip_choices_per_image"]["tiny"]["two_crops_s"] > 0 and a["skipped_to_fit"] == []

    t = last["trainer"]
    assert t["step_ms_iat_on"] > 0 and t["step_ms_iat_off"] > 0
    assert "loss_sra" in t["losses_iat_on"] and "loss_sra" not in t["losses_iat_off"]

    c = last["compile"]  # dynamo only on the CPU ("eager"): warmed for batch 1, guided and not, fusers on/off
    assert c["backend"] == "eager" and c["graphs_after_warmup"] == 4 and c["recompiles_after_warmup"] == 0

    o = last["oom"]
    assert o["injected"] and o["rendered"] == o["scenes"] == 4 and o["oom_splits"] == 1 and o["batch_sizes"] == [2]
