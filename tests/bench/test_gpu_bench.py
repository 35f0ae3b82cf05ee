"""`bench/gpu.py --tiny`: the prepared GPU check runs end to end on the CPU with test-sized models, so a
change in the synthesis, annotation or trainer code that would break it on a borrowed GPU fails here.
Every part runs, including the environment check, the per-stage timings, the FLOP count against the
measured matmul rate, the layout/precision variants and the compile part's three worker starts (cold,
warm from the artifact cache, background)."""

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
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--budget-s", "900",
                           "--out", str(out)], capture_output=True, text=True, timeout=1200, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["bench"] == "gpu" and last["errors"] == {}
    assert json.loads(out.read_text())["gligen"] == last["gligen"]
    assert last["check_env"]["ok"] is True
    assert [t["part"] for t in last["timeline"]] == ["check_env", "gligen", "annotation", "trainer", "oom", "compile"]
    assert set(last["summary"]) == {"gligen", "annotation", "trainer", "oom", "compile"}
    assert last["summary"]["gligen"]["best_images_per_s"] == last["gligen"]["best_images_per_s"]
    assert all(t["status"] == "ok" and t["seconds"] >= 0 for t in last["timeline"])

    g = last["gligen"]
    assert g["diffusers_batch1_images_per_s"] > 0
    assert set(g["ours"]) == {"1", "2", "4"} and all(v["images_per_s"] > 0 for v in g["ours"].values())
    assert g["best_over_diffusers_batch1"] > 0 and g["best_batch"] in (1, 2, 4)
    stages = g["ours"]["2"]["stages"]
    assert {"unet", "vae", "text_encoder", "scheduler"} <= set(stages["device_stages"])
    assert stages["device_stages"]["unet"]["calls"] == 6  # 2 batches x 3 PNDM iterations
    assert {"tokenize", "grounding", "to_host"} <= set(stages["host_stages"])
    assert abs(stages["device_busy_ms"] + stages["device_idle_ms"] - stages["wall_ms"]) < 0.05
    assert stages["copies"]["device_to_host"] == {"count": 2, "bytes": 2 * 2 * 3 * 64 * 64 * 4}
    assert [b["batch_size"] for b in g["ours"]["2"]["backend"]] == [2, 2]
    f = g["flops"]
    assert f["tflop_per_image"] > f["unet_pair_plain_tflop"] > 0 and f["vae_decode_tflop"] > 0
    assert f["unet_pair_grounded_tflop"] > f["unet_pair_plain_tflop"]  # the fusers cost FLOPs
    assert g["matmul"]["tflops"] > 0 and 0 < g["fraction_of_matmul_rate"]
    v = g["variants"]
    assert {"plain", "channels_last", "fused_qkv", "channels_last_fused_qkv", "channels_last_fused_qkv_bf16"} <= set(v)
    for name in ("channels_last", "fused_qkv", "channels_last_fused_qkv"):
        assert v[name]["images_per_s"] > 0 and v[name]["pixel_diff_to_plain"]["max"] <= 1, (name, v[name])
    assert v["channels_last_fused_qkv_bf16"]["dtype"] == "bfloat16"
    for n in (2, 3):  # deep-feature caching: fewer whole-UNet passes, its pixel cost measured beside
        c = v[f"fused_qkv_feature_cache_{n}"]
        assert c["feature_cache_interval"] == n and c["full_unet_passes"] < v["fused_qkv"]["full_unet_passes"]
        assert c["images_per_s"] > 0 and c["speedup_over_fused_qkv"] > 0 and c["pixel_diff_to_plain"]["max"] > 1

    a = last["annotation"]  # the GPU worker's configuration on the CPU: a host pool, crops cut "on the device"
    assert a["host_threads"] == 2 and a["clip_crops_on_device"] and a["encoder_batch_size"] == 2
    assert a["decoder_across_images"] is True
    assert a["decoder_boxes_per_call"] >= 64  # tiny embedding: all at once
    assert a["floor_s"] > 0 and a["single_task_ratio"] > 0 and a["steady_ratio"] > 0 and a["tasks_steady"] == 4
    # the GPU worker runs two tasks in flight: the goal is judged on that steady state and on one task alone
    assert a["in_flight"] == 2 and len(a["steady_in_flight_task_s"]) == 4 and a["steady_in_flight_ratio"] > 0
    assert a["meets_goal_steady"] == (a["steady_in_flight_ratio"] <= 1.15)
    assert a["meets_goal"] == (max(a["single_task_ratio"], a["steady_in_flight_ratio"]) <= 1.15)
    steps = a["steps_single_task"]
    assert {"encoder", "decoder", "crops", "clip"} <= set(steps["device_s"]) and steps["device_idle_s"] >= 0
    assert steps["d2h_copies"] == 1 and {"cleanup", "rle"} <= set(steps["host_s"])
    assert a["backends"]["sam"]["encoder_s"] > 0 and a["backends"]["clip"]["encoder_s"] > 0
    assert a["mask_stats"]["masks"] == 32 and a["blob_masks"]["mask_stats"]["components_per_mask_median"] == 2
    assert a["blob_masks"]["steady_ratio"] > 0 and a["blob_masks"]["steady_in_flight_ratio"] > 0
    assert set(a["encoder_images_per_s_by_batch"]) == {"1", "4"} and a["encoder_sdpa_speedup"] > 0
    assert a["clip_choices_per_image"]["tiny"]["two_crops_s"] > 0 and a["skipped_to_fit"] == []

    t = last["trainer"]  # the training smoke through the trainer's loop, then evaluation only on 8 images
    assert t["iterations"] == 6 and t["real_images"] > 0 and t["synthetic_images"] > 0 and t["iat"] is True
    assert isinstance(t["loss_falls"], bool) and t["loss_first"] > 0 and t["iter_ms_median"] > 0
    assert "loss_sra" in t["losses"] and t["loss_sra_nonzero_steps"] >= 0
    e = t["eval"]
    assert e["images"] == 8 and "0 missing, 0 unused" in e["weights"] and 0 <= e["mIoU"] <= 100

    o = last["oom"]
    assert o["injected"] and o["rendered"] == o["scenes"] == 4 and o["oom_splits"] == 1 and o["batch_sizes"] == [2]

    c = last["compile"]  # dynamo only on the CPU ("eager"), per block; three worker starts
    assert c["backend"] == "eager" and c["scope"] == "blocks" and set(c["runs"]) == {"cold", "warm", "background"}
    cold, warm, bg = c["runs"]["cold"], c["runs"]["warm"], c["runs"]["background"]
    for run in (cold, warm, bg):
        assert run["rc"] == 0 and "measured" in run["steps_done"] and run["status"]["state"] == "serving"
        assert run["recompiles_after_warmup"] == 0 and run["all_compiled"] is True
        assert run["stages_compiled"]["device_stages"]["unet"]["calls"] == 6
    assert cold["status"]["cache"] == "miss" and cold["status"]["blocking"] and cold["status"]["cache_saved"]
    assert cold["status"]["warmup_s_by_shape"]["batch2_guided"] > 0
    assert cold["eager_images_per_s"] > 0 and cold["pixel_diff_compiled_to_eager"]["max"] <= 1
    assert warm["status"]["cache"] == "hit" and warm["status"]["blocking"] is True
    assert bg["status"]["blocking"] is False and "compiled" in bg["steps_done"]
    assert bg["compiled_since_spawn_s"] >= bg["ready_since_spawn_s"]
    assert c["warm_start_s"] == warm["ready_since_spawn_s"] and c["compiled_over_eager"] > 0


def test_compile_figures_count_a_warm_start_killed_before_ready_as_over_the_goal():
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu

    ready = gpu.compile_figures({"cold": {"mode": "default", "ready_since_spawn_s": 142.0,
                                          "compiled_images_per_s": 8.1, "eager_images_per_s": 5.6},
                                 "warm": {"mode": "default", "ready_since_spawn_s": 21.5}})
    assert ready["warm_start_s"] == 21.5 and ready["meets_goal_warm_start"] is True
    assert ready["cold_start_s"] == 142.0 and ready["compiled_over_eager"] == round(8.1 / 5.6, 3)
    assert ready["best_mode"] == "default" and ready["meets_goal_images_per_s"] is True
    killed = gpu.compile_figures({"warm": {"mode": "default", "timed_out": True, "waited_s": 41.0,
                                           "steps_done": ["imported"]}})
    assert killed["warm_start_s_over"] == 41.0 and killed["meets_goal_warm_start"] is False
    assert "warm_start_s" not in killed
    # killed before the goal's time: nothing can be said
    assert "meets_goal_warm_start" not in gpu.compile_figures({"warm": {"timed_out": True, "waited_s": 12.0}})
