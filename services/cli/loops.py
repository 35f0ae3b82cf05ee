"""`dreammask loop ...`: the closed loop over the REST API (docs/loop.md): submit a loop, watch its rounds as
they happen, show its per-class figures round by round, list and cancel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
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
    load_spec_file,
    print_json,
    print_listing,
    timestamp,
)

TERMINAL = {"succeeded", "failed", "cancelled"}
loop_app = GuardedTyper(help="Closed loops: per-class evaluation steers each round's synthesis (docs/loop.md).",
                        no_args_is_help=True)


def _iou(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def print_loop(v: dict) -> None:
    """The loop's state, a line per round and the per-class IoU of every class, round by round."""
    colour = {"succeeded": "green", "failed": "red"}.get(v["state"], "yellow")
    console.print(f"loop {v['loop_id']}: [{colour}]{v['state']}[/{colour}], round {v['round']}/{v['rounds']} "
                  f"({v['step']})" + (f", checkpoint {v['checkpoint']}" if v.get("checkpoint") else ""), soft_wrap=True)
    if v.get("error"):
        console.print(f"  error: {v['error']}", soft_wrap=True)
    rounds = v.get("history") or []
    if not rounds:
        return
    t = Table("round", "allocation", "dataset", "training", "target mean IoU", "weakest")
    for r in rounds:
        alloc = ", ".join(f"{k} {n}" for k, n in (r.get("allocation") or {}).items()) or "-"
        t.add_row(str(r["round"]), alloc, r.get("dataset_id") or "-", r.get("training_id") or "-",
                  _iou(r.get("target_mean_iou")), _iou(r.get("target_min_iou")))
    console.print(t)
    classes = list(dict.fromkeys(c for r in rounds for c in r.get("per_class", {})))
    if classes:
        pc = Table("class", *(f"round {r['round']}" for r in rounds))
        for c in classes:
            pc.add_row(c, *(_iou(r.get("per_class", {}).get(c)) for r in rounds))
        console.print(pc)


def follow_loop(get_view, poll_s: float = 3.0, quiet: bool = False) -> dict:
    """Poll the loop until it ends, printing each step (its transitions) as it happens."""
    view = get_view()
    seen = 0
    while True:
        if not quiet:
            for tr in view["transitions"][seen:]:
                console.print(f"{timestamp(tr['at'])}  {tr['state']:<9} {tr.get('reason') or ''}", soft_wrap=True,
                              highlight=False)
        seen = len(view["transitions"])
        if view["state"] in TERMINAL:
            return view
        time.sleep(poll_s)
        view = get_view()


def _end(view: dict, json_out: bool, exit_on_failure: bool = True) -> None:
    if json_out:
        print_json(view)
    else:
        print_loop(view)
    if exit_on_failure and view["state"] in TERMINAL and view["state"] != "succeeded":
        raise typer.Exit(1)


@loop_app.command("submit")
def loop_submit(
    spec_file: Annotated[Path, typer.Argument(help="loop spec as YAML or JSON (fields: docs/loop.md)")],
    rounds: Annotated[Optional[int], typer.Option(help="rounds after round 0")] = None,
    images_per_round: Annotated[Optional[int], typer.Option(help="each round's image budget")] = None,
    name: Annotated[Optional[str], typer.Option(help="a name to recognise the loop by")] = None,
    watch_loop: Annotated[bool, typer.Option("--watch/--no-watch", help="follow it until it ends")] = False,
    json_out: JsonOut = False, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = "",
):
    """Start a closed loop from a spec file; flags override the file."""
    spec = load_spec_file(spec_file)
    for k, v in (("rounds", rounds), ("images_per_round", images_per_round), ("name", name)):
        if v is not None:
            spec[k] = v
    if "training" not in spec or "target" not in spec:
        raise CliError("the spec needs target and training", "see the example in docs/loop.md")
    with api_client(api_url, api_key) as c:
        view = check(c.post("/v1/loops", json=spec))
        if json_out and not watch_loop:
            print_json(view)
            return
        console.print(f"loop [bold]{view['loop_id']}[/bold] accepted: {view['url']}", soft_wrap=True)
        if watch_loop:
            _end(follow_loop(lambda: check(c.get(f"/v1/loops/{view['loop_id']}")), quiet=json_out), json_out)


@loop_app.command("watch")
def loop_watch(loop_id: Annotated[str, typer.Argument(help="a loop id (see `dreammask loop list`)")],
               json_out: JsonOut = False, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Follow a loop step by step; prints its rounds at the end and exits non-zero unless it succeeds."""
    with api_client(api_url, api_key) as c:
        _end(follow_loop(lambda: check(c.get(f"/v1/loops/{loop_id}")), quiet=json_out), json_out)


@loop_app.command("show")
def loop_show(loop_id: Annotated[str, typer.Argument(help="a loop id")], json_out: JsonOut = False,
              api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """A loop's rounds: allocation, dataset, training, and every class's IoU round by round."""
    with api_client(api_url, api_key) as c:
        _end(check(c.get(f"/v1/loops/{loop_id}")), json_out, exit_on_failure=False)


@loop_app.command("list")
def loop_list(limit: Annotated[int, typer.Option(help="at most this many (1-200)")] = 20,
              offset: Annotated[int, typer.Option(help="skip this many (newest first)")] = 0,
              json_out: JsonOut = False, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Your loops, newest first."""
    with api_client(api_url, api_key) as c:
        page = check(c.get("/v1/loops", params={"limit": limit, "offset": offset}))
    print_listing(page, json_out, "loop", "round", lambda v: f"{v['round']}/{v['rounds']}")


@loop_app.command("cancel")
def loop_cancel(loop_id: Annotated[str, typer.Argument(help="a loop id")], json_out: JsonOut = False,
                api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = ""):
    """Cancel a loop, and the job or training it is running."""
    with api_client(api_url, api_key) as c:
        _end(check(c.post(f"/v1/loops/{loop_id}/cancel")), json_out, exit_on_failure=False)
