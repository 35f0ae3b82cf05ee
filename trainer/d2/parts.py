"""The detectron2 path's logic that needs no detectron2 (so it is tested here): the training data with
class ids remapped into the union vocabulary and real/synthetic mixing, the optimizer with full-model
gradient clipping (unscaled first under AMP), the vocabulary the model is given, FC-CLIP weights mapped onto
the wrapper, and the evaluation (the platform loop's own, so both paths report the same figures)."""

from __future__ import annotations

from ..data.build import TrainData, Vocabulary, build_train_data
from ..engine.optim import add_full_model_gradient_clipping, build_optimizer


def check_d2_args(args) -> None:
    """Flag pairs the detectron2 entry refuses. detectron2's `--eval-only --resume` scores OUTPUT_DIR's last
    checkpoint; this entry's `--eval-only` scores MODEL.WEIGHTS (FC-CLIP's names mapped), so the pair would
    silently score another checkpoint than the one a detectron2 user expects."""
    if getattr(args, "eval_only", False) and getattr(args, "resume", False):
        raise SystemExit("--eval-only scores MODEL.WEIGHTS and does not resume: drop --resume and set MODEL.WEIGHTS "
                         "to the checkpoint to score (e.g. OUTPUT_DIR/model_final.pth)")


def d2_train_data(cfg, rank: int = 0, world_size: int = 1) -> TrainData:
    """The platform's own training data: real datasets (DATASETS.TRAIN) and curated synthetic ones
    (DATASETS.SYNTHETIC.IDS) in one vocabulary (each dataset's class ids remapped into it by name), each
    batch mixed at DATASETS.SYNTHETIC.RATIO with at least DATALOADER.MIN_REAL_PER_BATCH real images."""
    return build_train_data(cfg, rank, world_size)


def d2_optimizer(cfg, model):
    """AdamW over the trainable parameters, clipped as SOLVER.CLIP_GRADIENTS says before every step."""
    optimizer = build_optimizer(cfg, model)
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return optimizer
    return add_full_model_gradient_clipping(optimizer, float(clip.CLIP_VALUE), float(clip.NORM_TYPE))


def vocabulary_kwargs(vocab: Vocabulary) -> dict:
    """set_vocabulary(**) arguments for the training vocabulary (every class seen, FC-CLIP's names)."""
    return {
        "class_names": list(vocab.names),
        "seen": [True] * len(vocab.names),
        "synonyms": [list(x) for x in vocab.synonyms] if vocab.synonyms else None,
        "thing_flags": list(vocab.isthing),
    }


def load_fcclip_weights_into(model, path: str) -> dict:
    """Map a released FC-CLIP checkpoint onto the wrapped model (DDP and the d2 wrapper unwrapped)."""
    from ..engine.fcclip_weights import load_fcclip_weights

    return load_fcclip_weights(_inner(model), path)


def _inner(model):
    inner = getattr(model, "module", model)
    return getattr(inner, "model", inner)


def d2_test(cfg, model, vocabulary: Vocabulary | None = None) -> dict[str, dict]:
    """DefaultTrainer.test for the detectron2 path: every DATASETS.TEST entry evaluated by
    engine/evaluate.py (fp32, FC-CLIP's seen rule, per-class table). During training, `vocabulary` is the
    training vocabulary, restored after; for an evaluation-only run, the seen rule comes from the config."""
    from .. import distributed as dist
    from ..engine.evaluate import (
        evaluate_datasets,
        restoring_training_vocabulary,
        seen_reference,
        trained_novel_names,
        trained_novel_of,
    )

    inner = _inner(model)
    rank, world = dist.get_rank(), dist.get_world_size()
    if vocabulary is None:
        return evaluate_datasets(inner, cfg, seen_reference(cfg), trained_novel_names(cfg), rank, world)
    with restoring_training_vocabulary(inner, vocabulary):
        return evaluate_datasets(inner, cfg, vocabulary.seen_reference, trained_novel_of(vocabulary), rank, world)
