"""Curation benchmark: does streaming curation hold its memory and per-scene time as jobs grow, and does
Redis give back what a job used?

Jobs of 1 000 and 10 000 scenes of small synthetic annotations (64 px images, one novel and one or two
training instances each; `services/curation/synthetic_job.py`) go through the curation steps of the real
platform: one curation worker process (Celery, prefork, concurrency 1) on an embedded Redis and a local
object store, the per-scene messages sent as the annotation step would send them, the job's assemble step
triggered by its last scene. Each size runs on a freshly started platform, so the worker's peak RSS (the
kernel's VmHWM of the process that ran the tasks) belongs to that job alone.

Reported per size: peak RSS of the curation worker, seconds per scene (first message sent -> job
succeeded, from the job's own status record), Redis `used_memory` before the job and after it finished.
Goals: peak RSS at 10 000 <= 1.2 x at 1 000; s/scene at 10 000 <= 1.2 x at 1 000; Redis after the job
within 10 % of before.

    python bench/curation.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import redis

from dreammask.services.cli.harness import LocalPlatform
from dreammask.services.curation.synthetic_job import curation_messages, make_job
from dreammask.shared import keys
from dreammask.shared.runtime import build_runtime
from dreammask.shared.schemas import JobState
from dreammask.shared.settings import Settings


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def wait_terminal(rt, job: str):
    while True:
        st = rt.tracker.status(job)
        if st.state.terminal:
            return st
        time.sleep(0.5)


def run_size(n: int, root: Path, batch: int) -> dict:
    env = {"DREAMMASK_CURATION_BATCH_SIZE": str(batch), "DREAMMASK_LOG_LEVEL": "WARNING"}
    with LocalPlatform(root, services=("curation",), env=env) as p:
        worker = next(proc for name, proc in p.procs if name == "curation")
        r = redis.Redis.from_url(p.redis_url)
        s = Settings(redis_url=p.redis_url, storage_root=root / "objects", curation_batch_size=batch)
        rt = build_runtime(s)
        # A small job first, so connections, Celery's bindings and the lock script exist before the
        # measured "before": what remains is what the measured job itself leaves behind.
        warm = make_job(rt, 8, image_size=64)
        curation_messages(rt, warm)
        wait_terminal(rt, warm)
        t_make = time.perf_counter()
        job = make_job(rt, n, image_size=64)
        t_make = time.perf_counter() - t_make
        time.sleep(1.0)
        mem = r.info("memory")
        redis_before, dataset_before = int(mem["used_memory"]), int(mem["used_memory_dataset"])
        keys_before = int(r.dbsize())
        kids = children(worker.pid)
        idle_rss = max(vm_kib(k, "VmRSS") for k in kids)
        t0 = time.time()
        curation_messages(rt, job)
        st = wait_terminal(rt, job)
        if st.state != JobState.succeeded:
            raise RuntimeError(f"job {job} ended {st.state.value}: {st.error}")
        end = next(t.at for t in reversed(st.transitions) if t.state == JobState.succeeded).timestamp()
        time.sleep(1.0)
        mem = r.info("memory")
        redis_after, dataset_after = int(mem["used_memory"]), int(mem["used_memory_dataset"])
        keys_after = int(r.dbsize())
        job_keys = len(list(r.scan_iter(match=f"*{job}*", count=1000)))
        kids = children(worker.pid)
        peak_rss = max(vm_kib(k, "VmHWM") for k in kids)
        manifest = rt.store.get_json(keys.dataset_manifest_for_job(job))
        return {
            "scenes": n, "kept_images": manifest["images"], "make_job_s": round(t_make, 1),
            "seconds": round(end - t0, 2), "s_per_scene": round((end - t0) / n, 5),
            "worker_idle_rss_mib": round(idle_rss / 1024, 1), "worker_peak_rss_mib": round(peak_rss / 1024, 1),
            "redis_before_bytes": redis_before, "redis_after_bytes": redis_after,
            "redis_after_over_before": round(redis_after / redis_before, 3), "job_keys_left_in_redis": job_keys,
            "redis_dataset_bytes_before_after": [dataset_before, dataset_after],
            "redis_keys_before_after": [keys_before, keys_after],
        }


def main() -> None:
    # A terminated benchmark still stops the platform it started (the context managers run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[1000, 10000], metavar=("SMALL", "LARGE"))
    ap.add_argument("--batch", type=int, default=16, help="scenes per curation message")
    args = ap.parse_args()
    small, large = args.sizes
    results = {}
    with tempfile.TemporaryDirectory(prefix="dm-bench-curation-") as tmp:
        for n in (small, large):
            res = run_size(n, Path(tmp) / f"n{n}", args.batch)
            results[n] = res
            print(json.dumps(res), flush=True)
            shutil.rmtree(Path(tmp) / f"n{n}", ignore_errors=True)
    a, b = results[small], results[large]
    rss_ratio = b["worker_peak_rss_mib"] / a["worker_peak_rss_mib"]
    time_ratio = b["s_per_scene"] / a["s_per_scene"]
    redis_ratio = max(a["redis_after_over_before"], b["redis_after_over_before"])
    print(f"peak RSS of the curation worker: {a['worker_peak_rss_mib']} MiB at {small} scenes, "
          f"{b['worker_peak_rss_mib']} MiB at {large}: ratio {rss_ratio:.3f} (goal <= 1.2)")
    print(f"seconds per scene: {a['s_per_scene']} at {small}, {b['s_per_scene']} at {large}: "
          f"ratio {time_ratio:.3f} (goal <= 1.2)")
    print(f"Redis used_memory after/before the job: {a['redis_after_over_before']} ({small}), "
          f"{b['redis_after_over_before']} ({large}) (goal <= 1.10); job keys left: "
          f"{a['job_keys_left_in_redis']}, {b['job_keys_left_in_redis']}")
    print(json.dumps({
        "bench": "curation", "sizes": [small, large],
        "peak_rss_mib": [a["worker_peak_rss_mib"], b["worker_peak_rss_mib"]], "peak_rss_ratio": round(rss_ratio, 3),
        "s_per_scene": [a["s_per_scene"], b["s_per_scene"]], "s_per_scene_ratio": round(time_ratio, 3),
        "redis_after_over_before": [a["redis_after_over_before"], b["redis_after_over_before"]],
        "job_keys_left_in_redis": [a["job_keys_left_in_redis"], b["job_keys_left_in_redis"]],
        "goal_peak_rss_ratio": 1.2, "goal_s_per_scene_ratio": 1.2, "goal_redis_ratio": 1.1,
        "goals_met": rss_ratio <= 1.2 and time_ratio <= 1.2 and redis_ratio <= 1.1,
    }))


if __name__ == "__main__":
    main()
