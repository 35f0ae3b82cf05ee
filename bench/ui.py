"""Review UI at scale: the samples grid of a 10 000-sample job against that of a 100-sample job, in a real
browser (headless Chromium), side by side in one run.

Both jobs are made without GPU stages (`services/curation/synthetic_job.py`: small images with ellipse masks
written straight to storage), then curated by the real curation steps in this process (selection, export,
thumbnails, the review index). The API runs as its own
process (uvicorn) on a local object store, as in `make demo`. For each job the browser, logged in, loads
  * the first grid page,
  * the 100th grid page (the 100-sample job has fewer pages: its last full page stands in),
  * the first page of a filtered grid (status=rejected), for information (one facet: one facet page read),
each timed from navigation to every thumbnail in view decoded, the median (and the fastest) of `--repeats`
loads, jobs alternated. Goal: 10 000 within 1.5x of 100 for the first and the 100th page.

    python bench/ui.py                      # 10 000 vs 100 samples (a few minutes on 2 cores)
    python bench/ui.py --samples 2000       # quicker

Last line: one JSON object {"bench": "ui", ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "ui"))  # browser: how the tests start Chromium

GOAL_RATIO = 1.5
KEY = "bench-ui-key"
CATEGORIES = ["person", "dog", "car", "building", "awning", "stairway"]


def make_job(rt, n: int, size: int = 64, seed: int = 0) -> str:
    """A job of `n` annotated scenes written straight to storage (no GPU stage), then curated by the real
    curation steps (per scene: selection, export pieces, thumbnails; per job: assemble, review index)."""
    from dreammask.services.cli.inprocess import run_pending
    from dreammask.services.curation.synthetic_job import curation_messages
    from dreammask.services.curation.synthetic_job import make_job as synthetic_job

    # One light export format: the grid does not depend on which formats the dataset has.
    job_id = synthetic_job(rt, n, image_size=size, seed=seed, exports=["coco_instances"])
    curation_messages(rt, job_id)
    run_pending(rt)
    state = rt.tracker.status(job_id).state.value
    if state != "succeeded":
        raise RuntimeError(f"the benchmark's job {job_id} ended {state}")
    return job_id


def timed_load(d, url: str) -> float:
    """Navigation to every thumbnail in the viewport decoded (lazy ones below the fold excluded)."""
    from selenium.webdriver.common.by import By

    t0 = time.perf_counter()
    d.get(url)
    d.find_element(By.ID, "grid")
    script = """
      const imgs = Array.from(document.querySelectorAll('#grid img')).filter(
        (im) => im.getBoundingClientRect().top < window.innerHeight);
      return imgs.length > 0 && imgs.every((im) => im.complete && im.naturalWidth > 0);
    """
    deadline = time.monotonic() + 60
    while not d.execute_script(script):
        if time.monotonic() > deadline:
            raise TimeoutError(f"thumbnails of {url} did not load")
        time.sleep(0.005)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()

    from browser import MISSING, find_browser, start_chromium
    from selenium.webdriver.common.by import By

    from dreammask.services.cli.harness import LocalPlatform
    from dreammask.services.cli.inprocess import in_process_dispatcher
    from dreammask.shared.review import PAGE_SIZE
    from dreammask.shared.runtime import build_runtime, set_runtime
    from dreammask.shared.settings import Settings

    if find_browser() is None:
        print(json.dumps({"bench": "ui", "error": MISSING}))
        sys.exit(2)
    with tempfile.TemporaryDirectory() as tmp, LocalPlatform(Path(tmp), services=(), api_key=KEY,
                                                             tenant="bench") as p:
        rt = build_runtime(Settings(redis_url=p.redis_url, storage_root=p.root / "objects"),
                           dispatcher=in_process_dispatcher(), store=p.store)
        set_runtime(rt)
        t0 = time.perf_counter()
        big = make_job(rt, args.samples, seed=1)
        make_big_s = time.perf_counter() - t0
        small = make_job(rt, args.small, seed=2)
        print(f"made {args.samples} samples in {make_big_s:.0f}s ({make_big_s / args.samples * 1000:.1f} ms each: "
              "synthetic inputs, then the whole curation: export pieces, thumbnails, assembly, review index)", file=sys.stderr)
        # The page compared with the 100th: the 100th, or the last full page of a job that has fewer.
        pages = {big: max(1, args.samples // PAGE_SIZE), small: max(1, args.small // PAGE_SIZE)}
        d = start_chromium(1400, 1000)
        d.implicitly_wait(10)
        try:
            d.get(f"{p.api_url}/ui/login")
            d.find_element(By.ID, "api-key").send_keys(KEY)
            d.find_element(By.ID, "login-submit").click()
            d.find_element(By.ID, "logout")
            targets = {
                "first": lambda j: f"{p.api_url}/ui/jobs/{j}/samples?page=1",
                "page100": lambda j: f"{p.api_url}/ui/jobs/{j}/samples?page={min(100, pages[j])}",
                "filtered_first": lambda j: f"{p.api_url}/ui/jobs/{j}/samples?status=rejected&page=1",
            }
            times: dict[str, dict[str, list[float]]] = {k: {"big": [], "small": []} for k in targets}
            for url in targets.values():  # warm-up: connections, template compilation
                timed_load(d, url(big))
                timed_load(d, url(small))
            for _ in range(args.repeats):
                for name, url in targets.items():
                    times[name]["big"].append(timed_load(d, url(big)))
                    times[name]["small"].append(timed_load(d, url(small)))
        finally:
            d.quit()
    med = {k: {w: statistics.median(v) for w, v in t.items()} for k, t in times.items()}
    best = {k: {w: min(v) for w, v in t.items()} for k, t in times.items()}
    ratio = {k: med[k]["big"] / med[k]["small"] for k in med}
    ratio_best = {k: best[k]["big"] / best[k]["small"] for k in best}
    for k in med:
        print(f"{k:15s} {args.samples:6d} samples {med[k]['big'] * 1000:7.1f} ms   {args.small:4d} samples "
              f"{med[k]['small'] * 1000:7.1f} ms   ratio {ratio[k]:.2f} (fastest loads: {ratio_best[k]:.2f})",
              file=sys.stderr)
    print(json.dumps({
        "bench": "ui", "samples": args.samples, "small": args.small, "page_size": PAGE_SIZE,
        "repeats": args.repeats,
        "first_page_ms": round(med["first"]["big"] * 1000, 1),
        "first_page_small_ms": round(med["first"]["small"] * 1000, 1),
        "page100_ms": round(med["page100"]["big"] * 1000, 1),
        "page100_small_ms": round(med["page100"]["small"] * 1000, 1),
        "small_page_compared": min(100, pages[small]),
        "filtered_first_ms": round(med["filtered_first"]["big"] * 1000, 1),
        "filtered_first_small_ms": round(med["filtered_first"]["small"] * 1000, 1),
        "ratio_first": round(ratio["first"], 3), "ratio_page100": round(ratio["page100"], 3),
        "ratio_filtered_first": round(ratio["filtered_first"], 3),
        "ratio_first_fastest": round(ratio_best["first"], 3), "ratio_page100_fastest": round(ratio_best["page100"], 3),
        "make_ms_per_sample": round(make_big_s / args.samples * 1000, 2),
        "goal_ratio": GOAL_RATIO,
        "goal_met": ratio["first"] <= GOAL_RATIO and ratio["page100"] <= GOAL_RATIO,
    }))


if __name__ == "__main__":
    main()
