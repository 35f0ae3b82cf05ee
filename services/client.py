"""The REST client helpers the `dreammask` command and the demo share: requests with readable errors,
per-stage progress bars, dataset download. Kept apart so the CLI and the demo import this, not each other."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()
TERMINAL = {"succeeded", "failed", "cancelled"}


def _client(api_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=api_url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=60)


def _check(r: httpx.Response) -> dict:
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        if isinstance(detail, list):  # validation errors: say which field and what to change
            detail = "; ".join(f"{'.'.join(str(x) for x in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
        console.print(f"[red]error {r.status_code}[/red]: {detail}")
        raise typer.Exit(1)
    return r.json()


def follow(get_view, on_done=None, poll_s: float = 1.0) -> dict:
    """Progress bars per stage until the job ends; returns the final job view."""
    with Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[extra]}"), TimeElapsedColumn(), console=console) as prog:
        # One bar per stage of the job's chain, in the order the API reports them.
        bars: dict = {}
        while True:
            view = get_view()
            for stage, c in view.get("stages", {}).items():
                if stage not in bars:
                    bars[stage] = prog.add_task(stage, total=1, extra="")
                failed = f"[red]{c['failed']} failed[/red]" if c.get("failed") else ""
                prog.update(bars[stage], total=max(1, c["planned"]), completed=c["done"] + c.get("failed", 0),
                            extra=failed)
            if view["state"] in TERMINAL:
                return view
            time.sleep(poll_s)


def download_dataset(c: httpx.Client, dataset_id: str, dest: Path) -> int:
    info = _check(c.get(f"/v1/datasets/{dataset_id}"))
    n = 0
    for f in info["files"]:
        target = dest / f["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        url = f["url"]
        # Presigned URLs go straight to storage (no API key); API URLs need it.
        r = httpx.get(url, timeout=120) if f["presigned"] else c.get(url)
        r.raise_for_status()
        target.write_bytes(r.content)
        n += 1
    (dest / "manifest.json").write_text(json.dumps(info["manifest"], indent=2))
    return n
