"""Benchmark of the `llm` association backends: CNA plus layouts for 500 scenes against a loopback
OpenAI-compatible server with a fixed latency per completion and a concurrency limit.

The server (tests/association/fake_openai_server.py, in its own process) serves at most C completions at
once, each taking L seconds, so no client can get more than C / L completions per second: that is the
ceiling. Measured in one run, side by side, on the same 500 scenes:
- `efficiency`: one `plan()` call for all scenes (the backend issues them concurrently, bounded), then
  completions per second over the ceiling;
- `efficiency_worker_4_slots`: batches the size the association stage sends (the larger of
  DREAMMASK_LAYOUT_BATCH_SIZE and the backend's preferred batch size) planned by 4 callers at once, the way
  an association worker with 4 task slots (`--pool threads --concurrency 4`) plans them;
- `efficiency_worker_1_slot`: the same batches one after the other (a worker with one slot): the server
  idles between batches while the worker stores results and starts the next;
- the CNA call (R sampled rounds in parallel, then the embedding screen) on its own, and all together.
The client and the server share this machine's CPU, so a loaded machine lowers every figure; the load
average is printed with them. Last line: one JSON object.

    python bench/llm.py [--scenes 500] [--latency 0.05] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "association"))

from fake_openai_server import free_port  # noqa: E402

TRAIN = ["building", "car", "person", "dog", "table", "tree", "cup", "bed"]


def start_server(latency: float, concurrency: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "association" / "fake_openai_server.py"), "--port", str(port),
         "--latency", str(latency), "--concurrency", str(concurrency)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{base}/models", timeout=1).read()
            return proc, base
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the fake server exited: {proc.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the fake server did not start within 60 s")


def build(base_url: str, client_concurrency: int, rounds: int):
    os.environ.update({
        "DREAMMASK_LLM_BASE_URL": base_url,
        "DREAMMASK_LLM_MODEL": "fake-model",
        "DREAMMASK_LLM_MAX_CONCURRENCY": str(client_concurrency),
        "DREAMMASK_CNA_ROUNDS": str(rounds),
        "DREAMMASK_CNA_MIN_SUPPORT": str(min(2, rounds)),
    })
    from dreammask.services.association.backends.llm import LLMAssociation, LLMLayoutPlanner
    from dreammask.shared.settings import Settings

    core = Settings()
    return core, LLMAssociation.from_settings(core), LLMLayoutPlanner.from_settings(core)


def requests_for(novel, n: int, max_objects: int):
    from dreammask.shared.backends import LayoutRequest

    names = [c.name for c in novel]
    return [
        LayoutRequest(job_id="bench", scene_id=f"{i:05d}", scene_index=i, novel=novel[i % len(novel)], train=TRAIN,
                      novel_names=names, seed=1000 + i, job_seed=1000, max_objects=max_objects,
                      image_size=512)
        for i in range(n)
    ]


def run_layouts(planner, reqs, batch: int, slots: int = 1) -> tuple[float, int]:
    from concurrent.futures import ThreadPoolExecutor

    from dreammask.shared.schemas import SceneLayout

    chunks = [reqs[i : i + batch] for i in range(0, len(reqs), batch)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(slots) as pool:
        outs = list(pool.map(planner.plan, chunks))
    ok = sum(isinstance(x, SceneLayout) for out in outs for x in out)
    return time.perf_counter() - t0, ok


def main() -> None:
    ap = argparse.ArgumentParser(description="LLM association backends vs an OpenAI-compatible server's ceiling")
    ap.add_argument("--scenes", type=int, default=500)
    ap.add_argument("--latency", type=float, default=0.05, help="server seconds per completion")
    ap.add_argument("--concurrency", type=int, default=8, help="completions the server runs at once")
    ap.add_argument("--rounds", type=int, default=5, help="CNA rounds")
    ap.add_argument("--num-novel", type=int, default=5)
    ap.add_argument("--batch", type=int, default=0,
                    help="scenes per plan() call (default: as the stage batches, max(DREAMMASK_LAYOUT_BATCH_SIZE, "
                         "the backend's preferred batch size))")
    a = ap.parse_args()
    ceiling = a.concurrency / a.latency
    proc, base = start_server(a.latency, a.concurrency)
    try:
        core, cna, planner = build(base, 2 * a.concurrency, a.rounds)
        # What the association stage sends per task: the larger of the setting and the backend's preference.
        batch = a.batch or max(core.layout_batch_size, planner.preferred_batch_size)
        cna.warmup()
        planner.plan(requests_for(cna.associate(TRAIN, a.num_novel, seed=0)[0], a.concurrency, 6))  # warm connections

        t0 = time.perf_counter()
        novel, dropped = cna.associate(TRAIN, a.num_novel, seed=1)
        cna_s = time.perf_counter() - t0
        reqs = requests_for(novel, a.scenes, 6)

        one_s, ok_one = run_layouts(planner, reqs, len(reqs))
        slots4_s, ok_4 = run_layouts(planner, reqs, batch, slots=4)
        slot1_s, ok_1 = run_layouts(planner, reqs, batch, slots=1)
        planner.close()
        cna.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    n = len(reqs)
    eff = lambda sec: round(n / sec / ceiling, 3)  # noqa: E731
    result = {
        "bench": "llm",
        "scenes": n,
        "server_latency_ms": a.latency * 1000,
        "server_concurrency": a.concurrency,
        "ceiling_rps": round(ceiling, 1),
        "client_concurrency": 2 * a.concurrency,
        "layouts_rps": round(n / one_s, 1),
        "efficiency": eff(one_s),
        "efficiency_worker_4_slots": eff(slots4_s),
        "efficiency_worker_1_slot": eff(slot1_s),
        # What the batching costs against this client's own limit on this machine (a loaded CPU lowers both).
        "worker_1_slot_vs_one_call": round(one_s / slot1_s, 3),
        "layout_batch_size": batch,
        "layouts_ok": [ok_one, ok_4, ok_1],
        "cna_rounds": a.rounds,
        "cna_seconds": round(cna_s, 3),
        "cna_kept": len(novel),
        "cna_dropped": len(dropped),
        "efficiency_with_cna": round((n + a.rounds) / (cna_s + one_s) / ceiling, 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "goal_efficiency": 0.9,
    }
    print(f"layouts for {n} scenes: {one_s:.2f} s in one plan() call ({n / one_s:.1f}/s, ceiling {ceiling:.0f}/s); "
          f"batches of {batch}: {slots4_s:.2f} s with 4 slots, {slot1_s:.2f} s with 1; CNA {cna_s:.2f} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
