"""`make screenshots`: the review UI's main pages as PNGs for the docs (docs/img/), from a real run.

It starts the platform on embedded defaults (as `make demo` does: embedded Redis, local object store, the API
and one worker process per service), submits a demo-sized job (the COCO panoptic preset, novel categories
proposed by the embedding ranker, the preview renderer, GrabCut masks, geometric scores) with thresholds
strict enough that some samples are rejected, records one review decision so that the grid shows review
state, then opens each page in headless Chromium at 1400x900 and saves it:

    jobs.png  job.png  samples.png  sample.png  plots.png  dataset.png

    python deploy/tools/ui_screenshots.py --out docs/img              # what `make screenshots` runs
    python deploy/tools/ui_screenshots.py --out /tmp/shots --num-novel 2 --images-per-category 2

Needs Chromium and its driver (`apt-get install -y chromium chromium-driver`) and selenium (the dev extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "ui"))  # browser.py: how the tests start Chromium

KEY = "docs-key"
PAGES = ("jobs", "job", "samples", "sample", "plots", "dataset")
WIDTH, HEIGHT = 1400, 900


def demo_spec(num_novel: int, images_per_category: int, image_size: int) -> dict:
    return {"name": "docs: COCO panoptic -> novel categories", "preset": "coco_panoptic", "num_novel": num_novel,
            "images_per_category": images_per_category, "image_size": image_size, "seed": 2025,
            # Stricter than the defaults, so that the pages show rejections and their reasons.
            "thresholds": {"min_score": 0.8, "min_kept_fraction": 0.75}}


def pick_sample(client, job_id: str) -> str:
    """A kept sample with two or more instances (the sample page shows several masks), else the first."""
    scenes = client.get(f"/v1/jobs/{job_id}/scenes", params={"limit": 100}).json()["items"]
    several = [s["scene_id"] for s in scenes if len(s.get("instances") or []) >= 2]
    return (several or [scenes[0]["scene_id"]])[0]


def capture(d, base: str, key: str, job_id: str, dataset_id: str, sample_id: str, out: Path) -> list[Path]:
    """Log in and save every page of PAGES under `out`; returns the files written."""
    from browser import log_in, wait_for
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    d.set_window_size(WIDTH, HEIGHT)
    log_in(d, base, key)
    urls = {"jobs": "/ui/jobs", "job": f"/ui/jobs/{job_id}", "samples": f"/ui/jobs/{job_id}/samples",
            "sample": f"/ui/jobs/{job_id}/samples/{sample_id}", "plots": f"/ui/jobs/{job_id}/plots",
            "dataset": f"/ui/datasets/{dataset_id}"}
    written = []
    for name in PAGES:
        d.get(base + urls[name])
        # Every image decoded (thumbnails, the sample's image) before the picture is taken.
        wait_for(d, lambda d: d.execute_script(
            "return Array.from(document.images).every((im) => (im.complete && im.naturalWidth > 0)"
            " || (im.loading === 'lazy' && im.getBoundingClientRect().top > window.innerHeight));"),
            timeout=60, what=f"images of {name}")
        if d.find_elements(By.ID, "error-page"):
            raise RuntimeError(f"{name}: {d.find_element(By.ID, 'error-detail').text}")
        if name == "sample":
            wait_for(d, lambda d: d.find_element(By.ID, "sample").get_attribute("data-viewer") == "ready",
                     timeout=60, what="mask viewer")
            ActionChains(d).send_keys("j").perform()  # the first instance selected: highlighted on the image
        time.sleep(0.3)  # layout settles (fonts)
        path = out / f"{name}.png"
        d.save_screenshot(str(path))
        _shrink(path)
        written.append(path)
    return written


def _shrink(path: Path) -> None:
    """A palette PNG: a third of the size, and the UI's flat colours stay exact."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--num-novel", type=int, default=4)
    ap.add_argument("--images-per-category", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=320)
    args = ap.parse_args()

    from browser import MISSING, find_browser, start_chromium

    from dreammask.services.cli.harness import LocalPlatform

    if find_browser() is None:
        print(f"screenshots: {MISSING}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, LocalPlatform(Path(tmp), api_key=KEY, tenant="docs") as p:
        spec = demo_spec(args.num_novel, args.images_per_category, args.image_size)
        print(f"screenshots: running a demo-sized job on {p.api_url} ...", file=sys.stderr)
        job_id = p.submit(spec)
        view = p.wait(job_id, timeout=1800)
        if view["state"] != "succeeded":
            print(f"screenshots: the job {view['state']}: {view.get('error')}\n{p.tail_logs()}", file=sys.stderr)
            return 1
        sample_id = pick_sample(p.client, job_id)
        ann = p.client.get(f"/v1/jobs/{job_id}/files/annotations/{sample_id}.json").json()
        # One review decision, so that the grid and the sample page show what a review looks like.
        p.client.post(f"/v1/jobs/{job_id}/reviews", json={"scene_id": sample_id, "decision": "reject",
                                                          "instance_id": ann["instances"][-1]["instance_id"]})
        d = start_chromium(WIDTH, HEIGHT)
        try:
            files = capture(d, p.api_url, KEY, job_id, view["dataset_id"], sample_id, args.out)
        finally:
            d.quit()
    for f in files:
        print(f"screenshots: wrote {f.relative_to(ROOT) if f.is_relative_to(ROOT) else f} "
              f"({f.stat().st_size // 1024} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
