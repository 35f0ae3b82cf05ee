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

    a = last["annotation"]
    assert a["whole_to_encoder_ratio"] > 1 and a["decoder_boxes_per_call"] >= 64  # tiny embedding: all at once
    assert set(a["encoder_images_per_s_by_batch"]) == {"1", "4"}

    t = last["trainer"]  # the training smoke through the trainer's loop, then evaluation only on 8 images
    assert t["iterations"] == 6 and t["real_images"] > 0 and t["synthetic_images"] > 0 and t["iat"] is True
    assert isinstance(t["loss_falls"], bool) and t["loss_first"] > 0 and t["iter_ms_median"] > 0
    assert "loss_sra" in t["losses"] and t["loss_sra_nonzero_steps"] >= 0
    e = t["eval"]
    assert e["images"] == 8 and "0 missing, 0 unused" in e["weights"] and 0 <= e["mIoU"] <= 100

    c = last["compile"]  # dynamo only on the CPU ("eager"): warmed for batch 1, guided and not, fusers on/off
    assert c["backend"] == "eager" and c["graphs_after_warmup"] == 4 and c["recompiles_after_warmup"] == 0

    o = last["oom"]
    assert o["injected"] and o["rendered"] == o["scenes"] == 4 and o["oom_splits"] == 1 and o["batch_sizes"] == [2]
