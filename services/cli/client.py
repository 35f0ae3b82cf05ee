"""What the `dreammask` command and the demo share: per-stage progress bars and the dataset download. Kept
apart so the CLI and the demo import this, not each other."""

from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .download import download_dataset
from .support import console

__all__ = ["TERMINAL", "download_dataset", "follow"]

TERMINAL = {"succeeded", "failed", "cancelled"}


def follow(get_view, on_done=None, poll_s: float = 1.0) -> dict:
    """Progress bars per stage until the job ends; returns the final job view. The first view is read before
    any bar is drawn, so an unknown job is one error line and no empty bars."""
    view = get_view()
    with Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[extra]}"), TimeElapsedColumn(), console=console) as prog:
        # One bar per stage of the job's chain, in the order the API reports them.
        bars: dict = {}
        while True:
            for stage, c in view.get("stages", {}).items():
                if stage not in bars:
                    bars[stage] = prog.add_task(stage, total=1, extra="")
                failed = f"[red]{c['failed']} failed[/red]" if c.get("failed") else ""
                prog.update(bars[stage], total=max(1, c["planned"]), completed=c["done"] + c.get("failed", 0),
                            extra=failed)
            if view["state"] in TERMINAL:
                return view
            time.sleep(poll_s)
            view = get_view()
