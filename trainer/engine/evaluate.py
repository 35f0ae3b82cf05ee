"""Evaluation on DATASETS.TEST, one function for the training loop's periodic evaluation and for the
evaluation-only run (`train_net --eval-only`, the `evaluate` job of the training service), so both give the
same figures:

- each dataset is scored with its own class list, embedded with FC-CLIP's prompt-engineered names;
- a class counts as *seen* (ensemble weight alpha, else beta) when one of its names is a name of the first
  training dataset's classes, FC-CLIP's rule (its train metadata is DATASETS.TRAIN[0]);
- *novel* classes are those a curated dataset of the training flagged, or the evaluation dataset flags;
- in fp32: FC-CLIP evaluates without autocast, whatever the training's SOLVER.AMP says.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from dreammask.shared.schemas import normalise_name
from dreammask.shared.storage import ObjectStore

from .. import distributed as dist
from ..data import register_synthetic
from ..data.build import build_test_loader
from ..data.builtin import DATASET_VOCABULARIES
from ..data.catalog import DatasetCatalog
from ..data.vocabulary import load_vocabulary_file, seen_by_synonyms
from ..evaluation.evaluator import (
    build_evaluators,
    class_table_markdown,
    inference_on_dataset,
    per_class_rows,
    summary,
)
from .checkpoint import unwrap

log = logging.getLogger("dreammask.trainer")


def set_vocabulary(model: nn.Module, names: list[str], seen: list[bool], thing_flags: list[bool],
                   synonyms: list[list[str]] | None = None) -> None:
    """The model's class list; `synonyms` (one list per class) are exactly the names embedded."""
    model = unwrap(model)
    model.set_vocabulary(list(names), list(seen), synonyms=[list(s) for s in synonyms] if synonyms else None,
                         thing_flags=list(thing_flags))
    # The SRA bank of a vocabulary is created on first use; create it now, so a checkpoint's bank has a
    # buffer to load into and an exact resume starts with the bank it saved.
    iat = getattr(model, "iat", None)
    if iat is not None and hasattr(iat, "bank"):
        _ = iat.bank


def _device_type(model: nn.Module) -> str:
    p = next(unwrap(model).parameters(), None)
    return p.device.type if p is not None else "cpu"


def register_datasets(cfg) -> None:
    """The catalog's standard datasets under DATASETS.ROOT (idempotent)."""
    from ..data.register_coco_panoptic import register_builtin_datasets

    register_builtin_datasets(cfg.DATASETS.ROOT or None)


def seen_reference(cfg) -> list[list[str]]:
    """The names of the first training dataset's classes (FC-CLIP's seen rule), without reading its images:
    a shipped vocabulary file where one covers the dataset (COCO), else its metadata; with no real dataset,
    the first curated one's; with neither, none (every class unseen)."""
    if list(cfg.DATASETS.TRAIN):
        first = cfg.DATASETS.TRAIN[0]
        if first in DATASET_VOCABULARIES:
            return load_vocabulary_file(DATASET_VOCABULARIES[first]).synonyms
        register_datasets(cfg)
        return [list(s) for s in DatasetCatalog.get(first)[1].synonyms]
    if list(cfg.DATASETS.SYNTHETIC.IDS):
        name = register_synthetic.synthetic_name(cfg.DATASETS.SYNTHETIC.IDS[0])
        return [list(s) for s in DatasetCatalog.get(name)[1].synonyms]
    return []


def trained_novel_names(cfg) -> dict[str, bool]:
    """Class name -> novel, for the curated datasets of a training (the classes they flag novel)."""
    out: dict[str, bool] = {}
    for dataset_id in cfg.DATASETS.SYNTHETIC.IDS:
        meta = DatasetCatalog.get(register_synthetic.synthetic_name(dataset_id))[1]
        for c, novel in zip(meta.classes, meta.is_novel):
            out[normalise_name(c)] = out.get(normalise_name(c), True) and bool(novel)
    return out


@contextmanager
def restoring_training_vocabulary(model: nn.Module, vocabulary):
    """Evaluate inside: the training vocabulary (data/build.py Vocabulary) and every buffer (the SRA memory
    bank) are put back after, and the model back in training mode."""
    model = unwrap(model)
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    try:
        yield model
    finally:
        set_vocabulary(model, vocabulary.names, [True] * len(vocabulary.names), vocabulary.isthing,
                       vocabulary.synonyms)
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in saved and saved[n].shape == b.shape:
                    b.copy_(saved[n])
        model.train()


def trained_novel_of(vocabulary) -> dict[str, bool]:
    return {normalise_name(n): bool(v) for n, v in zip(vocabulary.names, vocabulary.is_novel)}


def evaluate_datasets(model: nn.Module, cfg, reference: list[list[str]], trained_novel: dict[str, bool],
                      rank: int = 0, world_size: int = 1, max_images: int = 0) -> dict[str, dict]:
    """Per DATASETS.TEST entry: its metrics (flat, `IoU-<class>` etc. included) and `classes`, the per-class
    table (IoU, PQ/SQ/RQ, seen, novel). Leaves the model in eval mode with the last dataset's vocabulary:
    the caller restores what it needs."""
    results = {}
    register_datasets(cfg)
    for name in cfg.DATASETS.TEST:
        loader, meta, tasks = build_test_loader(cfg, name, rank, world_size, max_images)
        seen = seen_by_synonyms(meta.synonyms, reference)
        novel = [bool(n) or trained_novel.get(normalise_name(c), False) for c, n in zip(meta.classes, meta.is_novel)]
        meta.is_novel = novel
        mf_test = cfg.MODEL.MASK_FORMER.TEST
        tasks = tuple(t for t in tasks if (t == "sem_seg" and mf_test.SEMANTIC_ON) or (t == "panoptic" and mf_test.PANOPTIC_ON))
        set_vocabulary(model, meta.classes, seen, meta.isthing, meta.synonyms)
        # fp32, as FC-CLIP evaluates: no autocast here, whatever the caller runs under.
        with torch.autocast(device_type=_device_type(model), enabled=False):
            r = inference_on_dataset(model, loader, build_evaluators(meta, seen, tasks), distributed=world_size > 1)
        r["classes"] = per_class_rows(r, meta.classes, seen, novel)
        r["num_seen"] = sum(seen)
        results[name] = r
    return results


def evaluation_only(cfg, store: ObjectStore | None = None, prefix: str = "", model: nn.Module | None = None) -> dict:
    """Evaluate MODEL.WEIGHTS (FC-CLIP's released checkpoint or one of this trainer's) on DATASETS.TEST;
    writes `evaluation.json` and `evaluation.md` (per-class tables) under `prefix` of `store` (main process)
    and returns the evaluation."""
    from .fcclip_weights import load_fcclip_weights, report_for_record
    from .runtime import resolve_device, seed_everything

    if not str(cfg.MODEL.WEIGHTS):
        raise ValueError("evaluation needs MODEL.WEIGHTS: the checkpoint to evaluate")
    if not list(cfg.DATASETS.TEST):
        raise ValueError("evaluation needs DATASETS.TEST: the datasets to evaluate on")
    dist.init_from_env(str(cfg.ENGINE.DIST_BACKEND), str(cfg.MODEL.DEVICE))
    rank, world = dist.get_rank(), dist.get_world_size()
    seed_everything(int(cfg.SEED) if int(cfg.SEED) >= 0 else 0, rank)
    device = resolve_device(cfg)
    start = time.perf_counter()
    if model is None:
        from dreammask.trainer.modeling import build_model

        model = build_model(cfg)
    model.to(device)
    report = load_fcclip_weights(model, str(cfg.MODEL.WEIGHTS))
    vocabulary = report.pop("extra", {}).get("vocabulary") or {}
    if vocabulary.get("seen_reference") is not None:
        # One of this trainer's checkpoints: the training's own reference and novel classes.
        reference = vocabulary["seen_reference"]
        trained = {normalise_name(n): bool(v) for n, v in zip(vocabulary["names"], vocabulary["is_novel"])}
    else:
        reference, trained = seen_reference(cfg), trained_novel_names(cfg)
    results = evaluate_datasets(model, cfg, reference, trained, rank, world)
    out = {
        "weights": str(cfg.MODEL.WEIGHTS),
        "weights_report": report_for_record(report),
        "seen_reference": len(reference),
        "seconds": round(time.perf_counter() - start, 3),
        "datasets": {name: {"metrics": _finite(summary(r)), "classes": r["classes"]} for name, r in results.items()},
    }
    if store is not None and dist.is_main_process():
        p = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        store.put_bytes(p + "evaluation.json", json.dumps(out, indent=1, default=str).encode(), "application/json")
        store.put_bytes(p + "evaluation.md", evaluation_markdown(out).encode(), "text/markdown")
    return out


def _finite(metrics: dict) -> dict:
    """NaN (a group with no class in the ground truth) as None, so the JSON is standard."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in metrics.items()}


def evaluation_markdown(evaluation: dict) -> str:
    lines = [f"# Evaluation of {Path(str(evaluation['weights'])).name}", "",
             f"Weights: {evaluation['weights_report']['summary']}", ""]
    for name, d in evaluation["datasets"].items():
        m = d["metrics"]
        figures = ", ".join(f"{k} {m[k]:.2f}" for k in ("mIoU", "mIoU_seen", "mIoU_unseen", "PQ", "SQ", "RQ",
                                                         "PQ_th", "PQ_st") if isinstance(m.get(k), float))
        lines += [f"## {name}", "", figures, "", class_table_markdown(d["classes"]), ""]
    return "\n".join(lines)
