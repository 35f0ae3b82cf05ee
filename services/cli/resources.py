"""`dreammask categories`, `scenes` and `trainings ...`: what the API holds about a job and about trainer
runs, as tables (ids at full width) or as the API's JSON (--json)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .support import (
    DEFAULT_API_URL,
    ApiKey,
    ApiUrl,
    CliError,
    GuardedTyper,
    JsonOut,
    api_client,
    check,
    console,
    err_console,
    id_table,
    load_spec_file,
    print_json,
    print_listing,
)

TERMINAL = {"succeeded", "failed", "cancelled"}


def categories_command(job_id: Annotated[str, typer.Argument(help="a job id (see `dreammask list`)")],
                       json_out: JsonOut = False, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """The novel categories a job proposed, with their nearest training category and score."""
    with api_client(api_url, api_key) as c:
        cats = check(c.get(f"/v1/jobs/{job_id}/categories"))
    if json_out:
        print_json(cats)
        return
    t = Table("novel category", "nearest training category", "score", "reason")
    for n in cats["novel"]:
        t.add_row(n["name"], n["nearest_train"], f"{n['score']:.3f}", n.get("reason") or "")
    console.print(t)
    console.print(f"{len(cats['novel'])} novel, {len(cats['train'])} training categories "
                  f"(backend {cats['backend']})")


def scenes_command(job_id: Annotated[str, typer.Argument(help="a job id")],
                   limit: Annotated[int, typer.Option(help="at most this many scenes (1-100)")] = 20,
                   offset: Annotated[int, typer.Option(help="skip this many scenes")] = 0,
                   json_out: JsonOut = False, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Each scene of a job: its novel category, stage status, kept instances and failures."""
    with api_client(api_url, api_key) as c:
        page = check(c.get(f"/v1/jobs/{job_id}/scenes", params={"limit": limit, "offset": offset}))
    if json_out:
        print_json(page)
        return
    # One column per stage, as the server's chain declares them (its order).
    stages = list(dict.fromkeys(name for s in page["items"] for name in s["stages"]))
    t = id_table("scene", [s["scene_id"] for s in page["items"]], "novel category", *stages, "instances", "failed")
    for s in page["items"]:
        fail = f"{s['failed']['stage']}: {s['failed']['reason']}" if s.get("failed") else ""
        t.add_row(s["scene_id"], s.get("novel_category") or "", *(s["stages"].get(n, "") for n in stages),
                  str(len(s["instances"])), fail)
    console.print(t)
    console.print(f"{len(page['items'])} of {page['total']} scenes")


# ------------------------------------------------------------------ trainings

trainings_app = GuardedTyper(help="Trainer runs on curated datasets: submit, watch, list, cancel; evaluate a checkpoint.",
                            no_args_is_help=True)


def _sra_off(v: dict) -> bool:
    return any(n.startswith("SRA is off") for n in v.get("notes") or [])


def _training_line(v: dict) -> str:
    losses = ", ".join(f"{k} {val:.3f}" + (" (SRA off: no real data)" if k == "loss_sra" and _sra_off(v) else "")
                       for k, val in sorted(v.get("losses", {}).items()) if isinstance(val, float))
    return f"training {v['training_id']}: {v['state']}, iteration {v['iteration']}/{v['max_iter']}" + (
        f"; {losses}" if losses else "")


def _warn_notes(v: dict) -> None:
    """The API's notes on a training (e.g. SRA off without real data), on stderr so --json stays clean."""
    for n in v.get("notes") or []:
        err_console.print(f"[yellow]warning[/yellow]: {n}", highlight=False, soft_wrap=True)
        if n.startswith("SRA is off"):
            err_console.print("  add real data with --real-dataset NAME (docs/training.md)", soft_wrap=True)


def _end_training(v: dict, json_out: bool, exit_on_failure: bool = True) -> None:
    if json_out:
        print_json(v)
    else:
        console.print(_training_line(v), soft_wrap=True)
        for n in v.get("notes") or []:
            console.print(f"  note: {n}", soft_wrap=True)
        if v.get("error"):
            console.print(f"  error: {v['error']}", soft_wrap=True)
        if v.get("checkpoint"):
            console.print(f"  checkpoint: {v['checkpoint']}", soft_wrap=True)
    if exit_on_failure and v["state"] in TERMINAL and v["state"] != "succeeded":
        raise typer.Exit(1)


def follow_training(get_view, poll_s: float = 2.0) -> dict:
    view = get_view()  # before any bar: an unknown id is one error line
    with Progress(TextColumn("iterations"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[extra]}"),
                  TimeElapsedColumn(), console=console) as prog:
        bar = prog.add_task("train", total=1, extra="")
        while True:
            losses = view.get("losses") or {}
            extra = f"{view['state']}" + (f" total_loss {losses['total_loss']:.3f}" if "total_loss" in losses else "")
            prog.update(bar, total=max(1, view["max_iter"]), completed=view["iteration"], extra=extra)
            if view["state"] in TERMINAL:
                return view
            time.sleep(poll_s)
            view = get_view()


@trainings_app.command("submit")
def trainings_submit(
    spec_file: Annotated[Optional[Path], typer.Argument(help="training spec as YAML or JSON")] = None,
    dataset: Annotated[Optional[list[str]], typer.Option("--dataset", help="curated dataset id (repeatable)")] = None,
    real_dataset: Annotated[Optional[list[str]], typer.Option(
        "--real-dataset", help="real dataset registered on the trainer, e.g. coco_2017_train_panoptic (repeatable)")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="trainer iterations")] = None,
    config: Annotated[Optional[str], typer.Option(help="config preset under trainer/configs/")] = None,
    tiny: Annotated[Optional[bool], typer.Option("--tiny/--full", help="the tiny random model (demos, tests)")] = None,
    override: Annotated[Optional[list[str]], typer.Option(
        "--set", help="config override KEY=VALUE, e.g. SOLVER.BASE_LR=5e-5 (repeatable)")] = None,
    name: Annotated[Optional[str], typer.Option(help="a name to recognise the training by")] = None,
    watch_training: Annotated[bool, typer.Option("--watch/--no-watch", help="follow it until it ends")] = False,
    json_out: JsonOut = False, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = "",
):
    """Start a training on curated (and real) datasets; flags override the spec file."""
    spec: dict = load_spec_file(spec_file) if spec_file else {}
    if dataset:
        spec["datasets"] = list(dataset)
    if real_dataset:
        spec["real_datasets"] = list(real_dataset)
    for k, v in (("iterations", iterations), ("config", config), ("tiny", tiny), ("name", name)):
        if v is not None:
            spec[k] = v
    for item in override or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--set {item!r} is not KEY=VALUE", "for example --set SOLVER.BASE_LR=5e-5")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        spec.setdefault("overrides", {})[key.strip()] = parsed
    if "iterations" not in spec:
        raise CliError("how many iterations?", "pass --iterations N (or `iterations:` in the spec file)")
    with api_client(api_url, api_key) as c:
        view = check(c.post("/v1/trainings", json=spec))
        _warn_notes(view)
        if json_out and not watch_training:
            print_json(view)
            return
        console.print(f"training [bold]{view['training_id']}[/bold] accepted: {view['url']}", soft_wrap=True)
        if watch_training:
            final = follow_training(lambda: check(c.get(f"/v1/trainings/{view['training_id']}")))
            _end_training(final, json_out)


@trainings_app.command("watch")
def trainings_watch(training_id: Annotated[str, typer.Argument(help="a training id")], json_out: JsonOut = False,
                    api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Follow a training's iterations and loss; exits non-zero unless it succeeds."""
    with api_client(api_url, api_key) as c:
        _end_training(follow_training(lambda: check(c.get(f"/v1/trainings/{training_id}"))), json_out)


@trainings_app.command("show")
def trainings_show(training_id: Annotated[str, typer.Argument(help="a training id")], json_out: JsonOut = False,
                   api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """A training's state, iteration, latest losses and checkpoint."""
    with api_client(api_url, api_key) as c:
        _end_training(check(c.get(f"/v1/trainings/{training_id}")), json_out, exit_on_failure=False)


@trainings_app.command("list")
def trainings_list(limit: Annotated[int, typer.Option(help="at most this many (1-200)")] = 20,
                   offset: Annotated[int, typer.Option(help="skip this many (newest first)")] = 0,
                   json_out: JsonOut = False, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Your trainings, newest first."""
    with api_client(api_url, api_key) as c:
        page = check(c.get("/v1/trainings", params={"limit": limit, "offset": offset}))
    print_listing(page, json_out, "training", "iteration", lambda v: f"{v['iteration']}/{v['max_iter']}")


@trainings_app.command("cancel")
def trainings_cancel(training_id: Annotated[str, typer.Argument(help="a training id")], json_out: JsonOut = False,
                     api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Cancel a training: it stops at its next status check and keeps a checkpoint."""
    with api_client(api_url, api_key) as c:
        _end_training(check(c.post(f"/v1/trainings/{training_id}/cancel")), json_out, exit_on_failure=False)


@trainings_app.command("evaluate")
def trainings_evaluate(
    weights: Annotated[str, typer.Argument(help="'tr-<id>' (its last checkpoint), 'tr-<id>/model_NNNNNNN.pth', or a "
                                                "file under the trainer's models directory (FC-CLIP's release)")],
    dataset: Annotated[list[str], typer.Option("--dataset", help="evaluation dataset, e.g. ade20k_panoptic_val (repeatable)")],
    config: Annotated[Optional[str], typer.Option(help="config preset (default: the training's own)")] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="the tiny random model (demos, tests)")] = False,
    override: Annotated[Optional[list[str]], typer.Option("--set", help="config override KEY=VALUE (repeatable)")] = None,
    name: Annotated[Optional[str], typer.Option(help="a name to recognise the evaluation by")] = None,
    watch_it: Annotated[bool, typer.Option("--watch/--no-watch", help="wait for the figures and print them")] = True,
    json_out: JsonOut = False, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = "",
):
    """Evaluate a checkpoint (fp32): per dataset mIoU, PQ/SQ/RQ and a per-class table marked seen/unseen."""
    req: dict = {"weights": weights, "eval_datasets": list(dataset), "tiny": tiny}
    if config is not None:
        req["config"] = config
    if name is not None:
        req["name"] = name
    for item in override or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--set {item!r} is not KEY=VALUE", "for example --set INPUT.MIN_SIZE_TEST=640")
        try:
            req.setdefault("overrides", {})[key.strip()] = json.loads(value)
        except ValueError:
            req.setdefault("overrides", {})[key.strip()] = value
    with api_client(api_url, api_key) as c:
        view = check(c.post("/v1/trainings/evaluations", json=req))
        tid = view["training_id"]
        if not watch_it:
            if json_out:
                print_json(view)
            else:
                console.print(f"evaluation [bold]{tid}[/bold] accepted: {view['url']}", soft_wrap=True)
            return
        if not json_out:
            console.print(f"evaluation [bold]{tid}[/bold] accepted; waiting for its figures", soft_wrap=True)
        while view["state"] not in TERMINAL:
            time.sleep(2.0)
            view = check(c.get(f"/v1/trainings/{tid}"))
        if view["state"] != "succeeded":
            _end_training(view, json_out)
            return
        evaluation = check(c.get(f"/v1/trainings/{tid}/evaluation"))
    if json_out:
        print_json(evaluation)
        return
    console.print(f"weights {evaluation['weights']}: {evaluation['weights_report']['summary']}", soft_wrap=True)
    for ds, d in evaluation["datasets"].items():
        m = d["metrics"]
        figures = "  ".join(f"{k} {m[k]:.1f}" for k in ("mIoU", "mIoU_seen", "mIoU_unseen", "PQ", "SQ", "RQ", "PQ_th",
                                                         "PQ_st") if isinstance(m.get(k), (int, float)))
        console.print(f"[bold]{ds}[/bold]: {figures}", soft_wrap=True)
        panoptic = any(r.get("PQ") is not None for r in d["classes"])
        t = Table("class", "seen", "IoU", *(("PQ", "SQ", "RQ") if panoptic else ()))
        for r in d["classes"]:
            cells = [r["class"], "seen" if r["seen"] else "unseen"] + [
                "n/a" if r.get(k) is None else f"{r[k]:.1f}" for k in (("IoU", "PQ", "SQ", "RQ") if panoptic else ("IoU",))]
            t.add_row(*cells)
        console.print(t)


@trainings_app.command("resume")
def trainings_resume(training_id: Annotated[str, typer.Argument(help="a training id")], json_out: JsonOut = False,
                     api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Queue a failed, cancelled or lost training again; it resumes from its last checkpoint."""
    with api_client(api_url, api_key) as c:
        _end_training(check(c.post(f"/v1/trainings/{training_id}/resume")), json_out, exit_on_failure=False)
