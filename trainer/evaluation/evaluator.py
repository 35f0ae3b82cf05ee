"""Run a model over an evaluation loader and feed the evaluators (each process its shard, sums reduced),
and the per-class table of a result."""

from __future__ import annotations

import math
import time

import torch

from .panoptic import PanopticEvaluator
from .sem_seg import SemSegEvaluator

TASKS = ("sem_seg", "panoptic")


def build_evaluators(metadata, seen: list[bool] | None = None, tasks=TASKS) -> list:
    out = []
    if "sem_seg" in tasks:
        out.append(SemSegEvaluator(metadata.classes, metadata.is_novel, metadata.ignore_label, seen))
    if "panoptic" in tasks:
        out.append(PanopticEvaluator(metadata.classes, metadata.isthing, metadata.is_novel, seen))
    return out


@torch.no_grad()
def inference_on_dataset(model, loader, evaluators, distributed: bool = False) -> dict[str, float]:
    """Metrics of `model` (in eval mode for the call, its mode restored after) over the loader. Runs in the
    caller's precision: evaluations of this trainer call it outside any autocast (fp32, as FC-CLIP)."""
    for e in evaluators:
        e.reset()
    was_training = model.training
    model.eval()
    start, images = time.perf_counter(), 0
    try:
        for batch in loader:
            outputs = model(batch)
            for e in evaluators:
                e.process(batch, outputs)
            images += len(batch)
    finally:
        model.train(was_training)
    results: dict[str, float] = {}
    for e in evaluators:
        if distributed:
            e.reduce()
        results.update(e.evaluate())
    results["eval_images"] = images
    results["eval_seconds"] = round(time.perf_counter() - start, 3)
    return results


def per_class_rows(results: dict, classes: list[str], seen: list[bool], novel: list[bool]) -> list[dict]:
    """One row per class: its IoU and (panoptic datasets) PQ/SQ/RQ, with its seen and novel flags; None
    where the class is absent from the ground truth and the predictions."""

    def val(key):
        v = results.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)

    return [{"class": c, "seen": bool(s), "novel": bool(n), "IoU": val(f"IoU-{c}"), "PQ": val(f"PQ-{c}"),
             "SQ": val(f"SQ-{c}"), "RQ": val(f"RQ-{c}")} for c, s, n in zip(classes, seen, novel)]


def class_table_markdown(rows: list[dict]) -> str:
    """The per-class table as Markdown: class, seen/unseen (FC-CLIP's rule), novel, IoU, PQ, SQ, RQ."""
    panoptic = any(r["PQ"] is not None for r in rows)
    head = ["class", "seen", "novel", "IoU"] + (["PQ", "SQ", "RQ"] if panoptic else [])
    out = ["| " + " | ".join(head) + " |", "| --- | --- | --- |" + " ---: |" * (len(head) - 3)]

    def fmt(v):
        return "n/a" if v is None else f"{v:.1f}"

    for r in rows:
        cells = [r["class"], "seen" if r["seen"] else "unseen", "novel" if r["novel"] else "", fmt(r["IoU"])]
        if panoptic:
            cells += [fmt(r["PQ"]), fmt(r["SQ"]), fmt(r["RQ"])]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def summary(results: dict) -> dict:
    """The dataset-level figures of a result (no per-class entries)."""
    return {k: v for k, v in results.items()
            if not k.startswith(("IoU-", "PQ-", "SQ-", "RQ-")) and not isinstance(v, (list, dict))}
