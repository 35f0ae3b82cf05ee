"""`make demo`: the whole platform on embedded defaults, on one machine, in a few minutes on 2 cores."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

from rich.console import Console

from .client import download_dataset, follow
from .harness import LocalPlatform
from .support import activation_hint, dreammask_command

DEMO_KEY = "demo-key"


def _finite(obj):
    """JSON has no NaN: metrics of classes absent from the data become null."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _stay_up(p: LocalPlatform, console: Console) -> None:
    console.rule("the platform stays up (--keep-up)")
    console.print(f"review UI: {p.api_url}/ui  (API key: {DEMO_KEY})")
    console.print("press Ctrl-C to stop it")
    # Ctrl-C as KeyboardInterrupt even where SIGINT came in ignored (the demo started in the background by a
    # script or CI, whose shell ignores SIGINT for it): `kill -INT` must stop it as Ctrl-C does.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while all(proc.poll() is None for _, proc in p.procs):
            time.sleep(0.5)
        console.print("[red]a platform process stopped; shutting down[/red]")
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        signal.signal(signal.SIGINT, previous)


def run_demo(out: Path, *, num_novel: int = 5, images_per_category: int = 4, image_size: int = 320,
             train_iterations: int = 10, console: Console | None = None, keep_up: bool = False) -> int:
    console = console or Console()
    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    spec = {
        "name": "demo: COCO panoptic -> novel categories",
        "preset": "coco_panoptic",
        "num_novel": num_novel,
        "images_per_category": images_per_category,
        "image_size": image_size,
        "seed": 2025,
    }
    t0 = time.time()
    console.rule("DreamMask demo")
    console.print("starting an embedded Redis, the API and one worker process per service "
                  "(association, synthesis, annotation, curation)...")
    with LocalPlatform(out / "platform", api_key=DEMO_KEY, tenant="demo") as p:
        console.print(f"API on {p.api_url}  (try: curl -H 'Authorization: Bearer {DEMO_KEY}' {p.api_url}/v1/jobs)")
        console.print(f"review UI on {p.api_url}/ui  (log in with the API key {DEMO_KEY})")
        console.print(f"submitting over REST: {json.dumps(spec)}")
        job_id = p.submit(spec)
        view = follow(lambda: p.job(job_id), poll_s=0.5)
        if view["state"] != "succeeded":
            console.print(f"[red]job {job_id} {view['state']}: {view.get('error')}[/red]")
            console.print(p.tail_logs())
            return 1
        cats = p.client.get(f"/v1/jobs/{job_id}/categories").json()
        console.print("novel categories: " + ", ".join(f"{n['name']} (from {n['nearest_train']})"
                                                       for n in cats["novel"]))
        ds_dir = out / "dataset"
        n_files = download_dataset(p.client, view["dataset_id"], ds_dir)
        sheet = out / "contact_sheet.png"
        shutil.copy(ds_dir / "contact_sheet.png", sheet)
        manifest = json.loads((ds_dir / "manifest.json").read_text())
        console.print(f"dataset {view['dataset_id']}: {manifest['images']} images, {manifest['instances']} "
                      f"instances kept ({n_files} files)")
        training = None
        if train_iterations > 0:
            console.print(f"training the (tiny, randomly initialised) FC-CLIP model for {train_iterations} "
                          "iterations on the curated dataset beside a small real-domain toy set...")
            from dreammask.trainer.engine.launch import train_on_dataset

            # The job's seed seeds the trainer too: two demo runs print the same losses (CPU is deterministic).
            training = train_on_dataset(p.store, view["dataset_id"], train_iterations, "trainings/demo/",
                                        cfg_overrides={"SEED": spec["seed"]}, real_toy=True)
            (out / "training.json").write_text(json.dumps(_finite(training), indent=2, default=str))
            losses = training.get("losses", {})
            console.print(f"trained {training.get('iteration')} iterations: total loss "
                          f"{losses.get('total_loss', float('nan')):.2f}, SRA loss "
                          f"{training.get('sra_loss_mean', 0.0):.3f} (random weights: a smoke test of the "
                          "trainer, not a model; see docs/training.md)")
        if keep_up:
            _stay_up(p, console)
    console.rule("where everything is")
    console.print(f"object store (every payload):  {out / 'platform' / 'objects'}")
    console.print(f"  job records:                 {out / 'platform' / 'objects' / 'jobs' / job_id}")
    console.print(f"curated dataset (downloaded):  {ds_dir}")
    console.print(f"  COCO instances / panoptic:   {ds_dir / 'annotations'}")
    console.print(f"  processed_dataset/ layout:   {ds_dir / 'processed_dataset'}")
    console.print(f"  dataset card:                {ds_dir / 'card.md'}")
    console.print(f"contact sheet:                 {sheet}")
    if training is not None:
        console.print(f"training result:               {out / 'training.json'}")
        console.print(f"  checkpoints and metrics:     {out / 'platform' / 'objects' / 'trainings' / 'demo'}")
    console.print(f"service logs:                  {out / 'platform' / 'logs'}")
    console.print(f"done in {time.time() - t0:.0f}s; every process the demo started has stopped.")
    dm, activate = dreammask_command(), activation_hint()
    console.rule("next")
    if activate:
        console.print(f"the `dreammask` command lives in the virtual environment: run `{activate}` in your shell "
                      f"to type `dreammask ...`, or call it by its path: {dm} --help", soft_wrap=True)
        dm = "dreammask"
    console.print(f"keep the platform up and review in the browser:  {dm} up", soft_wrap=True)
    console.print(f"the whole command list:                          {dm} --help", soft_wrap=True)
    return 0
