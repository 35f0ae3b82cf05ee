"""Run a model over an evaluation loader and feed the evaluators (each process its shard, sums reduced)."""

from __future__ import annotations

import time

import torch

from .panoptic import PanopticEvaluator
from .sem_seg import SemSegEvaluator


def build_evaluators(metadata, tasks=("sem_seg", "panoptic")) -> list:
    out = []
    if "sem_seg" in tasks:
        out.append(SemSegEvaluator(metadata.classes, metadata.is_novel))
    if "panoptic" in tasks:
        out.append(PanopticEvaluator(metadata.classes, metadata.isthing, metadata.is_novel))
    return out


@torch.no_grad()
def inference_on_dataset(model, loader, evaluators, distributed: bool = False) -> dict[str, float]:
    """Metrics of `model` (in eval mode for the call, its mode restored after) over the loader."""
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
