"""Chaos: break the running platform and measure whether jobs heal themselves.

Starts the platform (embedded backends, real worker processes, the supervisor), a Redis server of its
own, and an S3 server on loopback (moto_server) that the services reach through a TCP proxy this script
controls. Then, one job of `--scenes` scenes per fault:

  kill9          10 kill -9 of worker parents and children at random moments (killed parents are
                 restarted after 2 s, as a container restart policy would)
  flushdb        Redis FLUSHDB while the job runs (queues, counters, supervisor state all gone)
  redis_restart  Redis killed (-9) and restarted empty 5 s later
  storage_refused  the S3 endpoint refuses connections for 90 s
  storage_stalled  the S3 endpoint accepts connections and never answers, for 100 s

and two cases on tenants rather than faults (`--faults quota,deletion`):

  quota          a burst of concurrent submissions past the active-jobs quota of one tenant, while
                 another tenant submits too: exactly the quota is accepted, the rest is 429 naming it,
                 the other tenant is unaffected, and a slot frees when a job ends
  deletion       a job deleted while its scenes are being annotated: afterwards nothing of it is left in
                 storage (what landed after the deletion is counted and removed by the supervisor), and
                 every file of the tenant's other job and of the other tenant keeps its exact bytes

A first job with no fault (`none`) is the baseline. For each: scenes lost (neither output nor recorded failure), duplicated (a scene twice in the dataset),
failed, seconds from the end of the fault to the end of the job, whether a person had to act (the job
did not end by itself within the deadline), how much longer the job took than the baseline (time to finish
after the fault includes the work still to do, which the baseline accounts for), and whether the API's
counters equal the outputs in storage.
Nothing calls `resume`. Goal: 0, 0, 0, <= 120 s, never, exact.

    python bench/chaos.py                 # all five faults, 200 scenes each (about 25 minutes on 2 cores)
    python bench/chaos.py --short         # 24 scenes, kill9 (4 kills) and flushdb, fast supervisor timings
    python bench/chaos.py --short --faults quota,deletion --scenes 12

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import redis

from dreammask.services.cli.harness import LocalPlatform, free_port, redis_server_binary
from dreammask.shared import keys
from dreammask.shared.storage.s3 import S3ObjectStore

SERVICES = ("association", "synthesis", "annotation", "curation")
CASES = ("quota", "deletion")  # cases on tenants, reported apart from the faults
OTHER_KEY = "other-tenant-key"
QUOTA_ACTIVE_JOBS = 3
TRAIN = ["person", "dog", "car", "tree", "building", "chair", "table", "bus", "cat", "road", "sky", "grass",
         "bicycle", "boat", "bottle", "cup", "horse", "bird", "train", "truck"]


# ---------------------------------------------------------------------------------------------- proxy
class FaultProxy:
    """TCP proxy in front of the S3 server: `pass`, `refuse` (nothing listens: connection refused, live
    connections reset) or `stall` (connections accepted, nothing forwarded either way)."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.mode = "pass"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._listen()

    def _listen(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        s.settimeout(0.2)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set() and self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        try:
            while not self._stop.is_set():
                if self.mode == "stall":
                    time.sleep(0.1)
                    continue
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                while self.mode == "stall" and not self._stop.is_set():
                    time.sleep(0.1)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def refuse(self) -> None:
        self.mode = "refuse"
        listener, self._listener = self._listener, None
        if listener:
            listener.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    c.close()
                except OSError:
                    pass
            self._conns.clear()

    def stall(self) -> None:
        self.mode = "stall"

    def restore(self) -> None:
        if self._listener is None:
            self._listen()
        self.mode = "pass"

    def close(self) -> None:
        self._stop.set()
        self.refuse()


# ---------------------------------------------------------------------------------------------- chaos
class Chaos:
    def __init__(self, root: Path, short: bool, seed: int = 0):
        self.root = root
        self.short = short
        self.rng = random.Random(seed)
        self.procs: list[subprocess.Popen] = []
        self.redis_port = free_port()
        self.redis_proc = self._start_redis()
        self.redis = redis.Redis(port=self.redis_port, socket_connect_timeout=1, socket_timeout=5)
        self.s3_port = free_port()
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
        if exe is None:
            raise SystemExit("moto_server is needed: pip install 'moto[server]' (the dev extra)")
        self.procs.append(subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.s3_port)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_port(self.s3_port)
        self.proxy = FaultProxy(self.s3_port)
        # The bench reads storage directly, never through the proxy it breaks.
        self.store = S3ObjectStore(f"127.0.0.1:{self.s3_port}", "testing", "testing", "chaos")
        env = {
            "DREAMMASK_STORAGE_BACKEND": "s3", "DREAMMASK_S3_ENDPOINT": f"127.0.0.1:{self.proxy.port}",
            "DREAMMASK_S3_ACCESS_KEY": "testing", "DREAMMASK_S3_SECRET_KEY": "testing",
            "DREAMMASK_S3_BUCKET": "chaos", "DREAMMASK_LAYOUT_BATCH_SIZE": "8",
            # Two tenants (the quota and deletion cases), and a small job quota to run into.
            "DREAMMASK_API_KEYS": json.dumps({"local-dev-key": "local", OTHER_KEY: "other"}),
            "DREAMMASK_QUOTA_ACTIVE_JOBS": str(QUOTA_ACTIVE_JOBS),
        }
        if short:
            # Fast timings, so the test suite's run takes a few minutes: same mechanisms.
            env.update({"DREAMMASK_STALL_AFTER_S": "6", "DREAMMASK_SUPERVISOR_INTERVAL_S": "1",
                        "DREAMMASK_VISIBILITY_TIMEOUT_S": "20", "DREAMMASK_LEASE_RENEW_S": "5",
                        "DREAMMASK_RETRY_BACKOFF_MAX_S": "8"})
        if os.environ.get("DREAMMASK_CACHE_DIR"):
            env["DREAMMASK_CACHE_DIR"] = os.environ["DREAMMASK_CACHE_DIR"]
        self.platform = LocalPlatform(root / "platform", services=SERVICES, env=env,
                                      redis_url=f"redis://127.0.0.1:{self.redis_port}/0")
        try:
            self.platform.start()
        except BaseException:
            self.close()
            raise
        self.restarts = 0

    def _start_redis(self) -> subprocess.Popen:
        p = subprocess.Popen([redis_server_binary(), "--port", str(self.redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(self.root)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.redis_port)
        return p

    def close(self) -> None:
        self.platform.stop()
        self.proxy.close()
        for p in [*self.procs, self.redis_proc]:
            p.kill()
            p.wait(10)

    # ------------------------------------------------------------ what storage holds
    def produced(self, job_id: str) -> tuple[int, int]:
        annotated, failed = self.scene_sets(job_id)
        return len(annotated), len(failed)

    def scene_sets(self, job_id: str) -> tuple[set[str], set[str]]:
        """(scenes with an annotation, scenes with a recorded failure), from storage."""
        prefix = keys.job_prefix(job_id)
        annotated = {k.rsplit("/", 1)[1].split(".")[0] for k in self.store.list(prefix + "annotations/")}
        failed = {k.rsplit("/", 1)[1].split(".")[0] for k in self.store.list(prefix + "failures/")}
        return annotated, failed

    def state(self, job_id: str) -> dict:
        return self.store.get_json(keys.status(job_id))

    # ------------------------------------------------------------ faults
    def _workers(self) -> list[tuple[int, str, subprocess.Popen]]:
        return [(i, n, p) for i, (n, p) in enumerate(self.platform.procs) if n in SERVICES and p.poll() is None]

    def kill9(self, n: int, job_id: str) -> float:
        for k in range(n):
            time.sleep(self.rng.uniform(0.5, 3.0))
            workers = self._workers()
            _, name, parent = self.rng.choice([w for w in workers if w[1] != "curation"] or workers)
            children = psutil.Process(parent.pid).children()
            if k % 2 == 0 and children:
                os.kill(self.rng.choice(children).pid, 9)  # the parent forks a new child
            else:
                for c in children:
                    c.kill()  # a container's processes die with it
                os.kill(parent.pid, 9)
                parent.wait()
                threading.Timer(2.0, self._restart_worker, args=(name,)).start()
        return time.monotonic()

    def _restart_worker(self, name: str) -> None:
        self.restarts += 1
        env = dict(self.platform.env(), DREAMMASK_WORKER_HEARTBEAT_FILE=str(self.platform.root / f"{name}.heartbeat"))
        self.platform._spawn(name, [sys.executable, "-m", "celery", "-A", f"dreammask.services.{name}.worker",
                                    "worker", "-Q", name, "--concurrency", "1", "--pool", "prefork", "-n",
                                    f"{name}@%h-{os.getpid()}-{self.restarts}", "--without-gossip",
                                    "--without-mingle", "-l", "INFO"], env)

    def none(self, job_id: str) -> float:
        """The baseline: the same job with no fault, for how long the job itself takes."""
        return time.monotonic()

    def flushdb(self, job_id: str) -> float:
        self.redis.flushdb()
        return time.monotonic()

    def redis_restart(self, job_id: str) -> float:
        self.redis_proc.kill()
        self.redis_proc.wait()
        time.sleep(5)
        self.redis_proc = self._start_redis()
        return time.monotonic()

    def storage_refused(self, job_id: str) -> float:
        self.proxy.refuse()
        time.sleep(90)
        self.proxy.restore()
        return time.monotonic()

    def storage_stalled(self, job_id: str) -> float:
        self.proxy.stall()
        time.sleep(100)
        self.proxy.restore()
        return time.monotonic()

    # ------------------------------------------------------------ one scenario
    def scenario(self, fault: str, scenes: int, deadline_s: float) -> dict:
        per = scenes // 10 if scenes >= 100 else scenes // 4
        novel = scenes // per
        job_id = self.platform.submit({"train_categories": TRAIN, "num_novel": novel, "images_per_category": per,
                                       "image_size": 64, "seed": self.rng.randrange(1000)})
        t_start = time.monotonic()
        # Strike once a third of the scenes are annotated (kill9 strikes from the first layouts on).
        threshold = 1 if fault == "kill9" else max(1, scenes // 3)
        while self.produced(job_id)[0] < threshold and time.monotonic() - t_start < 600:
            if fault == "kill9" and any(True for _ in self.store.list(keys.job_prefix(job_id) + "layouts/")):
                break
            time.sleep(0.3)
        kills = 4 if self.short else 10
        t_end = self.kill9(kills, job_id) if fault == "kill9" else getattr(self, fault)(job_id)
        finished, st = None, None
        while time.monotonic() - t_end < deadline_s:
            try:
                st = self.state(job_id)
            except Exception:  # noqa: BLE001 - read again
                st = None
            if st and st["state"] in ("succeeded", "failed", "cancelled"):
                finished = time.monotonic()
                break
            time.sleep(0.5)
        planned = (st or {}).get("planned_scenes", scenes)
        annotated, failed_ids = self.scene_sets(job_id)
        annotations, failures = len(annotated), len(failed_ids)
        exact = None
        try:
            view = self.platform.job(job_id)
            exact = view["stages"]["annotation"]["done"] == annotations and \
                sum(c.get("failed", 0) for c in view["stages"].values()) == failures
        except Exception:  # noqa: BLE001
            pass
        duplicated, dataset_images = self.duplicates(job_id)
        selection = self.selection(job_id)
        interventions = [t["reason"] for t in (st or {}).get("transitions", [])
                         if (t.get("reason") or "").startswith("supervisor")]
        return {
            "fault": fault, "job_id": job_id, "scenes": planned, "state": (st or {}).get("state"),
            "lost": planned - len(annotated | failed_ids), "duplicated": duplicated, "dataset_images": dataset_images,
            # Scenes the quality selection left out of the dataset (by design, with a reason in the card):
            # dataset images + these = the annotated scenes when curation lost nothing.
            "dropped_by_selection": selection.get("dropped_scenes"),
            "dropped_reasons": selection.get("dropped_scenes_by_reason"),
            "curation_complete": selection.get("scenes") == len(annotated)
            and dataset_images + selection.get("dropped_scenes", -1) == len(annotated),
            "failed": failures,
            "time_to_finish_s": round(finished - t_end, 1) if finished else None,
            "job_seconds": round(finished - t_start, 1) if finished else None,
            "person_needed": finished is None, "counters_exact": exact,
            "supervisor_interventions": len(interventions),
        }

    # ------------------------------------------------------------ cases on tenants
    def _submit_as(self, key: str, spec: dict) -> httpx.Response:
        with httpx.Client(base_url=self.platform.api_url, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as c:
            return c.post("/v1/jobs", json=spec)

    def _wait(self, job_ids: list[str], deadline_s: float) -> dict[str, str]:
        t0, states = time.monotonic(), {}
        while time.monotonic() - t0 < deadline_s:
            for j in job_ids:
                try:
                    states[j] = self.state(j)["state"]
                except Exception:  # noqa: BLE001 - read again
                    pass
            if all(states.get(j) in ("succeeded", "failed", "cancelled") for j in job_ids):
                break
            time.sleep(0.5)
        return states

    def _small(self, seed: int, scenes: int = 4) -> dict:
        return {"train_categories": TRAIN, "num_novel": max(1, scenes // 2), "images_per_category": 2,
                "image_size": 64, "seed": seed}

    def quota(self, scenes: int, deadline_s: float) -> dict:
        other = self._submit_as(OTHER_KEY, self._small(900))
        burst = QUOTA_ACTIVE_JOBS + 4
        with ThreadPoolExecutor(burst) as pool:
            responses = list(pool.map(lambda i: self._submit_as("local-dev-key", self._small(1000 + i)),
                                      range(burst)))
        accepted = [r.json()["job_id"] for r in responses if r.status_code == 202]
        refused = [r for r in responses if r.status_code == 429]
        states = self._wait(accepted + ([other.json()["job_id"]] if other.status_code == 202 else []), deadline_s)
        again = self._submit_as("local-dev-key", self._small(2000))
        if again.status_code == 202:
            self._wait([again.json()["job_id"]], deadline_s)
        return {
            "case": "quota", "quota_active_jobs": QUOTA_ACTIVE_JOBS, "submitted": burst,
            "accepted": len(accepted), "refused_429": len(refused),
            "other_status": [r.status_code for r in responses if r.status_code not in (202, 429)],
            "quotas_named": sorted({r.json().get("quota") for r in refused}),
            "retry_after_s": sorted({int(r.headers.get("Retry-After", 0)) for r in refused}),
            "other_tenant_accepted": other.status_code == 202,
            "jobs_succeeded": sum(1 for st in states.values() if st == "succeeded"),
            "accepted_after_jobs_ended": again.status_code == 202,
        }

    def _checksums(self, skip_job: str | None) -> dict[str, str]:
        out = {}
        for k in self.store.list(""):
            if skip_job and (k.startswith((f"jobs/{skip_job}/", f"datasets/ds-{skip_job}/",
                                           f"datasets/ds-{skip_job}-v")) or k.endswith(f"/jobs/{skip_job}")):
                continue
            out[k] = hashlib.sha256(self.store.get_bytes(k)).hexdigest()
        return out

    def _victim_keys(self, job_id: str) -> int:
        return sum(1 for _ in self.store.list(keys.job_prefix(job_id))) + \
            sum(1 for _ in self.store.list(keys.dataset_prefix(keys.dataset_id_for_job(job_id))))

    def deletion(self, scenes: int, deadline_s: float) -> dict:
        mine = self._submit_as("local-dev-key", self._small(3000)).json()["job_id"]
        theirs = self._submit_as(OTHER_KEY, self._small(3001)).json()["job_id"]
        self._wait([mine, theirs], deadline_s)
        # Everyone else's files are hashed before the victim starts (they do not change while it runs):
        # hashing them between "enough scenes landed" and the delete gave a small job time to finish.
        before = self._checksums(None)
        per = max(2, scenes // 4)
        victim = self.platform.submit({"train_categories": TRAIN, "num_novel": max(1, scenes // per),
                                       "images_per_category": per, "image_size": 64, "seed": 3002})
        t0 = time.monotonic()
        while self.produced(victim)[0] < max(1, scenes // 3) and time.monotonic() - t0 < deadline_s:
            time.sleep(0.1)
        landed_before = int(self.redis.get("dreammask:deletions:landed") or 0)
        r = self.platform.client.delete(f"/v1/jobs/{victim}")
        t_del = time.monotonic()
        left_now = self._victim_keys(victim)
        # Work in flight finishes its batch; the supervisor sweeps the job's prefixes again meanwhile.
        seen_max = left_now
        while time.monotonic() - t_del < (20 if self.short else 60):
            seen_max = max(seen_max, self._victim_keys(victim))
            time.sleep(1.0)
        left = self._victim_keys(victim)
        after = self._checksums(skip_job=victim)
        changed = sum(1 for k, v in before.items() if after.get(k) != v)
        new = sorted(set(after) - set(before))
        return {
            "case": "deletion", "status": r.status_code, "deleted_objects": r.json().get("objects"),
            "was_running": r.json().get("cancelled"), "objects_left_at_once": left_now,
            "max_objects_seen_after": seen_max, "objects_left": left,
            "landed_after_deletion": int(self.redis.get("dreammask:deletions:landed") or 0) - landed_before,
            "others_files": len(before), "others_changed_or_lost": changed, "others_new_files": len(new),
            "victim_listed": victim in {j["job_id"] for j in self.platform.client.get("/v1/jobs").json()["items"]},
            "kept_job_state": self.state(mine)["state"], "other_tenant_job_state": self.state(theirs)["state"],
        }

    def selection(self, job_id: str) -> dict:
        """The dataset card's selection counts (empty when the job made no dataset)."""
        key = keys.dataset_file(keys.dataset_id_for_job(job_id), keys.CARD_JSON)
        try:
            return self.store.get_json(key).get("selection", {})
        except Exception:  # noqa: BLE001 - no dataset (the job did not succeed)
            return {}

    def duplicates(self, job_id: str) -> tuple[int, int]:
        """(scenes present more than once in the curated dataset, images in it)."""
        key = keys.dataset_file(keys.dataset_id_for_job(job_id), keys.COCO_INSTANCES)
        try:
            images = self.store.get_json(key).get("images", [])
        except Exception:  # noqa: BLE001 - no dataset (the job did not succeed)
            return 0, 0
        names = [im.get("file_name") for im in images]
        return len(names) - len(set(names)), len(names)


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="24 scenes, two faults, fast supervisor timings")
    ap.add_argument("--scenes", type=int, default=None)
    ap.add_argument("--faults", default=None, help="comma-separated subset; also the cases quota, deletion")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    scenes = args.scenes or (24 if args.short else 200)
    faults = (args.faults.split(",") if args.faults else
              ["kill9", "flushdb"] if args.short else
              ["none", "kill9", "flushdb", "redis_restart", "storage_refused", "storage_stalled"])
    deadline = 240 if args.short else 420
    root = Path(tempfile.mkdtemp(prefix="dreammask-chaos-"))
    chaos = Chaos(root, short=args.short, seed=args.seed)
    rows, cases = [], []
    try:
        for case in [f for f in faults if f in CASES]:
            result = getattr(chaos, case)(scenes, deadline)
            cases.append(result)
            print(f"{case:<16} {json.dumps(result)}", flush=True)
        for fault in [f for f in faults if f not in CASES]:
            row = chaos.scenario(fault, scenes, deadline)
            rows.append(row)
            print(f"{row['fault']:<16} state={row['state']} scenes={row['scenes']} lost={row['lost']} "
                  f"duplicated={row['duplicated']} failed={row['failed']} "
                  f"time_to_finish_s={row['time_to_finish_s']} person_needed={row['person_needed']} "
                  f"counters_exact={row['counters_exact']} interventions={row['supervisor_interventions']}",
                  flush=True)
    finally:
        if os.environ.get("CHAOS_KEEP_LOGS"):
            print(chaos.platform.tail_logs(40), file=sys.stderr)
        chaos.close()
        shutil.rmtree(root, ignore_errors=True)
    baseline = next((r["job_seconds"] for r in rows if r["fault"] == "none"), None)
    for r in rows:
        # What the fault cost: the job's duration beyond the same job's without a fault.
        r["extra_s_vs_baseline"] = (round(r["job_seconds"] - baseline, 1)
                                    if baseline is not None and r["job_seconds"] is not None else None)
    print()
    print(f"{'fault':<16} {'lost':>5} {'dup':>4} {'failed':>6} {'finish_s':>9} {'job_s':>7} {'extra_s':>8} "
          f"{'person':>7} {'exact':>6} {'images':>7} {'dropped':>8}")
    for r in rows:
        print(f"{r['fault']:<16} {r['lost']:>5} {r['duplicated']:>4} {r['failed']:>6} "
              f"{str(r['time_to_finish_s']):>9} {str(r['job_seconds']):>7} {str(r['extra_s_vs_baseline']):>8} "
              f"{str(r['person_needed']):>7} {str(r['counters_exact']):>6} {r['dataset_images']:>7} "
              f"{str(r['dropped_by_selection']):>8}")
    rows_f = [r for r in rows if r["fault"] != "none"] or rows
    worst = max(((r["time_to_finish_s"] or float("inf")) for r in rows_f), default=float("inf"))
    summary = {
        "bench": "chaos", "short": args.short, "scenes_per_job": scenes, "faults": len(rows),
        "lost": sum(r["lost"] for r in rows), "duplicated": sum(r["duplicated"] for r in rows),
        "failed": sum(r["failed"] for r in rows),
        "max_extra_s_vs_baseline": max((r["extra_s_vs_baseline"] or 0) for r in rows_f)
        if baseline is not None else None,
        "max_time_to_finish_s": None if worst == float("inf") else worst,
        "person_needed": any(r["person_needed"] for r in rows),
        "counters_exact": all(r["counters_exact"] for r in rows),
        "curation_complete": all(r["curation_complete"] for r in rows),
        "goal_max_time_to_finish_s": 120,
        "rows": rows,
        "cases": cases,
        # Of the cases: another tenant's (or the deleted job's sibling's) files changed or lost.
        "other_tenant_lost": sum(c.get("others_changed_or_lost", 0) for c in cases),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
