"""The `dreammask` command: submit and follow jobs, trainings and closed loops over the REST API, browse categories and
scenes, download datasets, run the platform (`up`, `api`, `worker`) or the demo. Failures print one or two
lines and exit non-zero; `--debug` shows the traceback."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .client import TERMINAL, follow
from .download import download_dataset, download_dataset_command
from .loops import loop_app
from .platform import down_command, env_command, up_command, worker_command
from .resources import categories_command, scenes_command, trainings_app
from .support import (
    DEFAULT_API_URL,
    CliError,
    GuardedTyper,
    JsonOut,
    State,
    api_client,
    check,
    console,
    load_spec_file,
    print_json,
    print_listing,
)
from .support import ApiKey as ApiKey
from .support import ApiUrl as ApiUrl

__all__ = ["app", "download_dataset", "follow"]


app = GuardedTyper(help="DreamMask: synthetic data for open-vocabulary segmentation.", no_args_is_help=True,
           pretty_exceptions_enable=False)


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", envvar="DREAMMASK_DEBUG",
                                              help="show the full traceback of a failure")] = False):
    State.debug = debug


@app.command()
def submit(
    spec_file: Annotated[Optional[Path], typer.Argument(help="job spec as YAML or JSON (fields as in the README)")] = None,
    categories: Annotated[Optional[str], typer.Option(help="comma-separated training categories, e.g. 'person,dog,car'")] = None,
    preset: Annotated[Optional[str], typer.Option(help="category preset instead of --categories: coco_panoptic")] = None,
    num_novel: Annotated[Optional[int], typer.Option(help="novel categories to propose")] = None,
    images_per_category: Annotated[Optional[int], typer.Option(help="scenes rendered per novel category")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="side of the square images, in pixels")] = None,
    seed: Annotated[Optional[int], typer.Option(help="job seed; per-scene seeds derive from it")] = None,
    name: Annotated[Optional[str], typer.Option(help="a name to recognise the job by")] = None,
    watch_job: Annotated[bool, typer.Option("--watch/--no-watch", help="follow the job until it ends")] = False,
    json_out: JsonOut = False,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = "",
):
    """Submit a synthesis job from a spec file and/or flags (flags override the file)."""
    spec: dict = load_spec_file(spec_file) if spec_file else {}
    if categories is not None:
        spec["train_categories"] = _category_list(categories)
    for k, v in (("preset", preset), ("num_novel", num_novel), ("images_per_category", images_per_category),
                 ("image_size", image_size), ("seed", seed), ("name", name)):
        if v is not None:
            spec[k] = v
    if not spec:
        raise CliError("nothing to submit", "give a spec file, or --categories 'person,dog' / --preset coco_panoptic")
    with api_client(api_url, api_key) as c:
        view = check(c.post("/v1/jobs", json=spec))
        if json_out and not watch_job:
            print_json(view)
            return
        console.print(f"job [bold]{view['job_id']}[/bold] accepted: {view['url']}", soft_wrap=True)
        if watch_job:
            final = follow(lambda: check(c.get(f"/v1/jobs/{view['job_id']}")))
            _print_outcome(final, json_out=json_out)


def _category_list(text: str) -> list[str]:
    """--categories as a list; an empty name is refused as the API refuses it (not silently dropped)."""
    names = [c.strip() for c in text.split(",")]
    empty = [i for i, c in enumerate(names) if not c]
    if empty:
        raise CliError(f"--categories: item {empty[0]}: category names must not be empty ({text!r})",
                       "remove the doubled, leading or trailing comma", code=2)
    return names


def _print_outcome(view: dict, exit_on_failure: bool = True, json_out: bool = False) -> None:
    """Print how the job ended; exit non-zero unless it succeeded, so scripts can rely on the status."""
    if json_out:
        print_json(view)
    else:
        colour = {"succeeded": "green", "failed": "red"}.get(view["state"], "yellow")
        console.print(f"job {view['job_id']}: [{colour}]{view['state']}[/{colour}]", soft_wrap=True)
        if view.get("error"):
            console.print(f"  error: {view['error']}", soft_wrap=True)
        if view.get("dataset_id"):
            console.print(f"  dataset: {view['dataset_id']} ({view.get('dataset_url')})", soft_wrap=True)
            console.print(f"  download it: dreammask download {view['dataset_id']}", soft_wrap=True)
    if exit_on_failure and view["state"] in TERMINAL and view["state"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def watch(job_id: Annotated[str, typer.Argument(help="a job id (see `dreammask list`)")],
          json_out: JsonOut = False, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Follow a job with a progress bar per stage; exits non-zero unless it succeeds."""
    with api_client(api_url, api_key) as c:
        _print_outcome(follow(lambda: check(c.get(f"/v1/jobs/{job_id}"))), json_out=json_out)


@app.command("list")
def list_jobs(status: Annotated[Optional[JobStatus], typer.Option(help="only jobs in this state")] = None,
              limit: Annotated[int, typer.Option(help="at most this many (1-200)")] = 20,
              offset: Annotated[int, typer.Option(help="skip this many (newest first)")] = 0,
              json_out: JsonOut = False, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """List your jobs, newest first."""
    params = {"limit": limit, "offset": offset, **({"status": status.value} if status else {})}
    with api_client(api_url, api_key) as c:
        page = check(c.get("/v1/jobs", params=params))
    print_listing(page, json_out, "job", "scenes", lambda j: str(j["planned_scenes"]))


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(help="a job id")], json_out: JsonOut = False,
           api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Cancel a job: no new work starts for it."""
    with api_client(api_url, api_key) as c:
        _print_outcome(check(c.post(f"/v1/jobs/{job_id}/cancel")), exit_on_failure=False, json_out=json_out)


@app.command()
def resume(job_id: Annotated[str, typer.Argument(help="a job id")], json_out: JsonOut = False,
           api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Resume a failed, cancelled or stuck job: re-enqueue what storage does not hold yet."""
    with api_client(api_url, api_key) as c:
        out = check(c.post(f"/v1/jobs/{job_id}/resume"))
    if json_out:
        print_json(out)
        return
    queued = ", ".join(f"{n} {stage}" for stage, n in out["enqueued"].items() if n) or "nothing (all outputs exist)"
    console.print(f"resumed {job_id}: re-enqueued {queued}", soft_wrap=True)
    console.print(f"follow it: dreammask watch {job_id}", soft_wrap=True)


def _deletion_path(what: str) -> str:
    """The DELETE route of an id, by its form: jobs `j…`, trainings `tr-…`, datasets `ds-…` (a published
    version is `ds-…-vN`)."""
    if what.startswith("tr-"):
        return f"/v1/trainings/{what}"
    if what.startswith("ds-"):
        return f"/v1/datasets/{what}"
    if what.startswith("j"):
        return f"/v1/jobs/{what}"
    raise CliError(f"{what!r} is not a job (j…), dataset (ds-…, ds-…-vN) or training (tr-…) id",
                   "job ids: `dreammask list`; training ids: `dreammask trainings list`; a job's dataset is ds-<job id>")


@app.command()
def delete(what: Annotated[str, typer.Argument(help="a job (j…), dataset (ds-…; a version ds-…-vN) or "
                                                      "training (tr-…) id")],
           yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
           json_out: JsonOut = False, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Delete a job (with its dataset and every version; cancelled first if it runs), one dataset or
    version, or a training (with its checkpoints). Nothing of another job or tenant is touched."""
    path = _deletion_path(what)
    if not yes and not typer.confirm(f"delete {what} and everything stored under it?", default=False):
        raise CliError("nothing deleted", "pass --yes to delete without being asked")
    with api_client(api_url, api_key) as c:
        out = check(c.delete(path))
    if json_out:
        print_json(out)
        return
    how = "cancelled, then deleted" if out.get("cancelled") else "deleted"
    if out.get("pending"):
        how = "cancelled; deleted once it has stopped"
    console.print(f"{out['deleted']} {out['id']}: {how} ({out['objects']} objects removed)", soft_wrap=True)


app.command("categories")(categories_command)
app.command("scenes")(scenes_command)
app.add_typer(trainings_app, name="trainings")
app.add_typer(loop_app, name="loop")
app.command("download")(download_dataset_command)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where everything is written")] = Path("demo-output"),
    num_novel: Annotated[int, typer.Option(help="novel categories")] = 5,
    images_per_category: Annotated[int, typer.Option(help="scenes per novel category")] = 4,
    image_size: Annotated[int, typer.Option(help="image side in pixels")] = 320,
    train_iterations: Annotated[int, typer.Option(help="trainer iterations on the curated dataset")] = 10,
    keep_up: Annotated[bool, typer.Option("--keep-up", help="keep the platform (API, review UI, workers) up "
                                          "until Ctrl-C")] = False,
):
    """Run the whole platform locally on embedded defaults (no GPU, weights, Docker or system services)."""
    from .demo import run_demo

    sys.exit(run_demo(out, num_novel=num_novel, images_per_category=images_per_category, image_size=image_size,
                      train_iterations=train_iterations, console=console, keep_up=keep_up))


@app.command()
def api(host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 8000):
    """Serve the API (uvicorn with the API's own protocol: slow clients are cut; docs/security.md)."""
    from dreammask.services.api.server import serve

    serve(host=host, port=port)


app.command("worker")(worker_command)
app.command("up")(up_command)
app.command("down")(down_command)
app.command("env")(env_command)


@app.command()
def supervisor():
    """Run the supervisor: heals jobs that stopped progressing (one instance is enough; two are safe)."""
    from dreammask.shared.supervisor import main

    main()

