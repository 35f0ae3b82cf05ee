"""The `dreammask` command: submit and follow jobs over the REST API, download datasets, run the demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
from rich.table import Table

from .client import TERMINAL, _check, _client, console, download_dataset, follow

app = typer.Typer(help="DreamMask: synthetic data for open-vocabulary segmentation.", no_args_is_help=True)

ApiUrl = Annotated[str, typer.Option(envvar="DREAMMASK_API_URL", help="API base URL")]
ApiKey = Annotated[str, typer.Option(envvar="DREAMMASK_API_KEY", help="API key (bearer)")]


@app.command()
def submit(
    spec_file: Annotated[Optional[Path], typer.Argument(help="job spec as YAML or JSON")] = None,
    categories: Annotated[Optional[str], typer.Option(help="comma-separated training categories")] = None,
    preset: Annotated[Optional[str], typer.Option(help="category preset, e.g. coco_panoptic")] = None,
    num_novel: Annotated[Optional[int], typer.Option()] = None,
    images_per_category: Annotated[Optional[int], typer.Option()] = None,
    image_size: Annotated[Optional[int], typer.Option()] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    watch_job: Annotated[bool, typer.Option("--watch/--no-watch")] = False,
    api_url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = "",
):
    """Submit a synthesis job from a spec file and/or flags (flags override the file)."""
    spec: dict = {}
    if spec_file:
        spec = yaml.safe_load(spec_file.read_text()) or {}
    if categories:
        spec["train_categories"] = [c.strip() for c in categories.split(",") if c.strip()]
    for k, v in (("preset", preset), ("num_novel", num_novel), ("images_per_category", images_per_category),
                 ("image_size", image_size), ("seed", seed)):
        if v is not None:
            spec[k] = v
    with _client(api_url, api_key) as c:
        view = _check(c.post("/v1/jobs", json=spec))
        console.print(f"job [bold]{view['job_id']}[/bold] accepted: {view['url']}")
        if watch_job:
            final = follow(lambda: _check(c.get(f"/v1/jobs/{view['job_id']}")))
            _print_outcome(final)


def _print_outcome(view: dict, exit_on_failure: bool = True) -> None:
    """Print how the job ended; exit non-zero unless it succeeded, so scripts can rely on the status."""
    colour = {"succeeded": "green", "failed": "red"}.get(view["state"], "yellow")
    console.print(f"job {view['job_id']}: [{colour}]{view['state']}[/{colour}]")
    if view.get("error"):
        console.print(f"  error: {view['error']}")
    if view.get("dataset_id"):
        console.print(f"  dataset: {view['dataset_id']} ({view.get('dataset_url')})")
    if exit_on_failure and view["state"] in TERMINAL and view["state"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def watch(job_id: str, api_url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = ""):
    """Follow a job with a progress bar per stage."""
    with _client(api_url, api_key) as c:
        _print_outcome(follow(lambda: _check(c.get(f"/v1/jobs/{job_id}"))))


@app.command("list")
def list_jobs(status: Annotated[Optional[str], typer.Option()] = None, limit: int = 20, offset: int = 0,
              api_url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = ""):
    """List your jobs, newest first."""
    params = {"limit": limit, "offset": offset, **({"status": status} if status else {})}
    with _client(api_url, api_key) as c:
        page = _check(c.get("/v1/jobs", params=params))
    t = Table("job", "name", "state", "scenes", "created")
    for j in page["items"]:
        t.add_row(j["job_id"], j.get("name") or "", j["state"], str(j["planned_scenes"]), j["created_at"][:19])
    console.print(t)
    console.print(f"{len(page['items'])} of {page['total']}")


@app.command()
def cancel(job_id: str, api_url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = ""):
    """Cancel a job: no new work starts for it."""
    with _client(api_url, api_key) as c:
        _print_outcome(_check(c.post(f"/v1/jobs/{job_id}/cancel")), exit_on_failure=False)


@app.command()
def resume(job_id: str, api_url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = ""):
    """Resume a failed, cancelled or stuck job: re-enqueue what storage does not hold yet."""
    with _client(api_url, api_key) as c:
        out = _check(c.post(f"/v1/jobs/{job_id}/resume"))
    console.print(f"resumed {job_id}; enqueued: {out['enqueued']}")


@app.command()
def download(dataset_id: str, dest: Annotated[Path, typer.Option("--to")] = Path("."),
             api_url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = ""):
    """Download every file of a dataset."""
    with _client(api_url, api_key) as c:
        n = download_dataset(c, dataset_id, dest / dataset_id)
    console.print(f"{n} files in {dest / dataset_id}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where everything is written")] = Path("demo-output"),
    num_novel: int = 5,
    images_per_category: int = 4,
    image_size: int = 320,
    train_iterations: Annotated[int, typer.Option(help="trainer iterations on the curated dataset")] = 10,
    keep_up: Annotated[bool, typer.Option("--keep-up", help="keep the platform (API, review UI, workers) up "
                                          "until Ctrl-C")] = False,
):
    """Run the whole platform locally on embedded defaults (no GPU, weights, Docker or system services)."""
    from .demo import run_demo

    sys.exit(run_demo(out, num_novel=num_novel, images_per_category=images_per_category, image_size=image_size,
                      train_iterations=train_iterations, console=console, keep_up=keep_up))


@app.command()
def api(host: str = "127.0.0.1", port: int = 8000):
    """Serve the API (production: uvicorn/gunicorn behind a proxy)."""
    import uvicorn

    uvicorn.run("dreammask.services.api.main:app", host=host, port=port)


@app.command()
def worker(service: str, concurrency: int = 1, loglevel: str = "INFO"):
    """Start the Celery worker of one service (association, synthesis, annotation, curation)."""
    module = f"dreammask.services.{service}.worker" if service != "training" else "dreammask.trainer.service.worker"
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", module, "worker", "-Q", service,
                               "--concurrency", str(concurrency), "-l", loglevel])


@app.command()
def supervisor():
    """Run the supervisor: heals jobs that stopped progressing (one instance is enough; two are safe)."""
    from dreammask.shared.supervisor import main

    main()


if __name__ == "__main__":
    app()
