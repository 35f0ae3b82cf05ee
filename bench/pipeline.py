"""Pipeline benchmark: (a) platform overhead per message hop, (b) pipeline efficiency against the bottleneck.

(a) The same job — backends that do no work — runs through the platform (API, Redis queues, local object
    store) and through the same stage functions called in this process, one message after the other.
    Like with like: the platform run has ONE worker process consuming every queue one task at a time
    (`bench/serial_worker.py`), serial as the in-process run is, so the difference is what the hops cost
    (serialisation, Redis round trips, task bookkeeping) and parallel workers cannot hide it.
    Overhead per hop = (platform time − in-process time) / messages delivered, from the best of 3
    alternating rounds of each. Batch size 1, so every scene makes its own hops. The deployed shape (one
    worker per service, in parallel) is reported beside it.
(b) Backends that sleep a fixed time per scene (synthesis 200 ms, annotation 100 ms, layout 20 ms): the
    throughput of scenes (submission -> last scene annotated) against the capacity of the bottleneck
    (one synthesis worker: 5 scenes/s). The one-off dataset export after the last scene is reported beside
    it (job efficiency), since it is per job, not per scene.
Times come from the job's own records (status transitions, annotation timestamps), not from polling.

    python bench/pipeline.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import redis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from dreammask.services.cli.harness import LocalPlatform  # noqa: E402
from dreammask.services.cli.inprocess import in_process_dispatcher, run_pending  # noqa: E402
from dreammask.shared import orchestration  # noqa: E402
from dreammask.shared.registry import load_backend_plugins  # noqa: E402
from dreammask.shared.runtime import build_runtime, set_runtime  # noqa: E402
from dreammask.shared.schemas import JobSpec  # noqa: E402
from dreammask.shared.settings import Settings  # noqa: E402
from dreammask.shared.storage import LocalObjectStore  # noqa: E402

STAGES = ("association", "layout", "synthesis", "masks", "scores")
SLEEP_MS = {"association": 50, "layout": 20, "synthesis": 200, "masks": 100, "scores": 0}


def spec(backend: str, novel: int, per: int) -> dict:
    return {"train_categories": ["person", "dog", "car"], "num_novel": novel, "images_per_category": per,
            "image_size": 64, "backends": {s: backend for s in STAGES},
            "thresholds": {"min_score": 0.0, "min_kept_fraction": 0.0}}


def duration(status) -> float:
    end = next(t.at for t in reversed(status.transitions) if t.state.value == "succeeded")
    return (end - status.created_at).total_seconds()


def scenes_window(store, status) -> float:
    """Job created -> last scene annotated: the part of the job that flows scene by scene."""
    from dreammask.shared.schemas import SceneAnnotation

    last = max(store.get_model(k, SceneAnnotation).created_at
               for k in store.list(f"jobs/{status.job_id}/annotations/"))
    return (last - status.created_at).total_seconds()


SERIAL_WORKER = [("serial", "serial_worker", "association,synthesis,annotation,curation")]
ROUNDS = 3  # (a): alternating platform / in-process rounds; the best of each is compared


def _platform_job(p: LocalPlatform, job: dict) -> tuple[float, float]:
    from dreammask.shared.jobs import JobTracker

    jid = p.submit(job)
    view = p.wait(jid, timeout=600, poll_s=0.2)
    assert view["state"] == "succeeded", view
    status = JobTracker(p.store, redis.Redis.from_url(p.redis_url)).status(jid)
    return duration(status), scenes_window(p.store, status)


def platform_run(root: Path, env: dict, job: dict, warmup: dict) -> tuple[float, float]:
    with LocalPlatform(root, env=env) as p:
        # Warm-up: the first messages pay for imports and connections. Finished before the measured job.
        p.wait(p.submit(warmup), timeout=300, poll_s=0.2)
        return _platform_job(p, job)


def serial_rounds(root: Path, env: dict, job: dict, warmup: dict, batch: dict, rounds: int):
    """(a) like with like: the job through the platform with one serial worker, then through the stage
    functions in this process, alternating for `rounds` rounds (so load from other processes hits both
    alike); per-round times of each and the number of messages."""
    platform, inproc, messages = [], [], 0
    with LocalPlatform(root / "platform", env=env, services=(), extra_workers=SERIAL_WORKER) as p:
        p.wait(p.submit(warmup), timeout=300, poll_s=0.2)
        for r in range(rounds):
            platform.append(_platform_job(p, job)[0])
            t, messages = in_process_run(root / f"inproc-{r}", p.redis_url, job, batch)
            inproc.append(t)
    return platform, inproc, messages


def in_process_run(root: Path, redis_url: str, job: dict, batch: dict) -> tuple[float, int]:
    s = Settings(redis_url=redis_url, storage_root=root, plugins=["stub_backends"], **batch)
    load_backend_plugins(s)
    rt = build_runtime(s, dispatcher=in_process_dispatcher(), store=LocalObjectStore(root))
    set_runtime(rt)
    js = JobSpec(**job)
    stored = rt.tracker.create(js, "bench", js.train_categories)
    orchestration.start(rt, stored.job_id)
    n = run_pending(rt)
    return duration(rt.tracker.status(stored.job_id)), n


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dreammask-bench-"))
    deployed = json.dumps({s: ["noop", "sleep"] for s in STAGES})
    base_env = {"PYTHONPATH": str(BENCH), "DREAMMASK_PLUGINS": json.dumps(["stub_backends"]),
                "DREAMMASK_DEPLOYED_BACKENDS": deployed}

    # (a) overhead per hop, batch size 1
    batch1 = {"layout_batch_size": 1, "synthesis_batch_size": 1, "annotation_batch_size": 1}
    env_a = {**base_env, **{f"DREAMMASK_{k.upper()}": "1" for k in batch1}}
    job_a = spec("noop", 10, 6)  # 60 scenes
    runs_platform, runs_inproc, messages = serial_rounds(tmp / "a", env_a, job_a, spec("noop", 1, 2), batch1, ROUNDS)
    # the least disturbed run of each (a shared machine's noise only ever adds time)
    t_platform, t_inproc = min(runs_platform), min(runs_inproc)
    t_parallel, _ = platform_run(tmp / "a-parallel", env_a, job_a, spec("noop", 1, 2))
    overhead_ms = (t_platform - t_inproc) / messages * 1000
    overhead_parallel_ms = (t_parallel - t_inproc) / messages * 1000

    # (b) efficiency with sleeping backends (default batch sizes)
    env_b = {**base_env, **{f"DREAMMASK_BENCH_SLEEP_{k.upper()}_MS": str(v) for k, v in SLEEP_MS.items()},
             "DREAMMASK_LAYOUT_BATCH_SIZE": "4", "DREAMMASK_SYNTHESIS_BATCH_SIZE": "4",
             "DREAMMASK_ANNOTATION_BATCH_SIZE": "2"}
    n_scenes = 200
    t_job, t_b = platform_run(tmp / "b", env_b, spec("sleep", 25, 8), spec("noop", 1, 2))
    capacity = 1000.0 / SLEEP_MS["synthesis"]  # scenes/s of the one synthesis worker
    throughput = n_scenes / t_b
    efficiency = throughput / capacity
    job_efficiency = n_scenes / t_job / capacity

    print(f"(a) {messages} messages: platform with one serial worker {t_platform:.2f}s, in-process "
          f"{t_inproc:.2f}s -> {overhead_ms:.2f} ms overhead per hop (like with like); 4 parallel workers "
          f"{t_parallel:.2f}s -> {overhead_parallel_ms:.2f} ms per hop (parallelism hides part of it)")
    print(f"(b) {n_scenes} scenes annotated {t_b:.2f}s after submission: {throughput:.2f} scenes/s against a "
          f"bottleneck of {capacity:.1f} scenes/s -> efficiency {efficiency:.3f}; with the one-off dataset "
          f"export the job took {t_job:.2f}s -> {job_efficiency:.3f}")
    print(json.dumps({"bench": "pipeline", "overhead_ms_per_hop": round(overhead_ms, 2), "goal_overhead_ms": 5,
                      "messages": messages, "platform_serial_s": round(t_platform, 3), "in_process_s": round(t_inproc, 3),
                      "platform_parallel_s": round(t_parallel, 3), "rounds": ROUNDS,
                      "platform_serial_runs_s": [round(t, 3) for t in runs_platform],
                      "in_process_runs_s": [round(t, 3) for t in runs_inproc],
                      "overhead_ms_per_hop_parallel_workers": round(overhead_parallel_ms, 2),
                      "efficiency": round(efficiency, 3), "goal_efficiency": 0.95,
                      "job_efficiency_with_export": round(job_efficiency, 3),
                      "throughput_scenes_per_s": round(throughput, 3), "bottleneck_scenes_per_s": capacity}))


if __name__ == "__main__":
    main()
