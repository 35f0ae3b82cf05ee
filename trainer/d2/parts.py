"""The detectron2 path's logic that needs no detectron2 (so it is tested here): the training data with
class ids remapped into the union vocabulary and real/synthetic mixing, the optimizer with full-model
gradient clipping, the vocabulary the model is given, and FC-CLIP weights mapped onto the wrapper."""

from __future__ import annotations

from ..data.build import TrainData, Vocabulary, build_train_data
from ..engine.optim import add_full_model_gradient_clipping, build_optimizer


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

    inner = getattr(model, "module", model)
    inner = getattr(inner, "model", inner)
    return load_fcclip_weights(inner, path)
