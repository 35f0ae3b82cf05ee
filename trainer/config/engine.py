"""Config keys of the data, engine, evaluation and service half of the trainer (detectron2 style).

`get_cfg()` (dreammask.trainer.config.model) gives the model's keys; `add_engine_config(cfg)` adds these.
Every key is only added where it is missing, so the model's own defaults (SOLVER.BASE_LR, ...) win and
calling it twice is harmless. docs/training.md lists every key with its meaning.
"""

from __future__ import annotations

from typing import Any

from yacs.config import CfgNode as _YacsNode


def _node_class(cfg):
    return type(cfg)


def _ensure(node, key: str, value: Any):
    """Set node.key = value unless present; nested dicts become CfgNodes of the same class as `node`."""
    if isinstance(value, dict):
        if key not in node:
            node[key] = _node_class(node)()
        child = node[key]
        for k, v in value.items():
            _ensure(child, k, v)
        return
    if key not in node:
        node[key] = value


ENGINE_DEFAULTS: dict[str, Any] = {
    "MODEL": {
        # A released FC-CLIP checkpoint (.pth/.pkl, detectron2 format) mapped onto this model at start.
        "WEIGHTS": "",
    },
    "DATASETS": {
        # Real datasets by catalog name (register_coco_panoptic.py), e.g. "coco_2017_train_panoptic".
        "TRAIN": (),
        "TEST": (),
        # Where the catalog finds COCO (and other registered datasets); "" = $DREAMMASK_DATASETS or ./datasets.
        "ROOT": "",
        "SYNTHETIC": {
            # Curated datasets exported by the platform, by dataset id (read from object storage).
            "IDS": (),
            # Share of each batch taken from synthetic samples (rounded per process batch).
            "RATIO": 0.5,
            # Local cache the exports are copied to before training ("" = a temp dir per run).
            "CACHE_DIR": "",
        },
    },
    "DATALOADER": {
        "NUM_WORKERS": 2,
        # Every per-process batch keeps at least this many real samples, so the SRA memory bank fills.
        "MIN_REAL_PER_BATCH": 1,
        "SEED": 0,
    },
    # INPUT keys are the model's (trainer/config/model.py): IMAGE_SIZE, MIN_SCALE, MAX_SCALE, RANDOM_FLIP,
    # MIN_SIZE_TEST, MAX_SIZE_TEST and DATASET_MAPPER_NAME ("coco_panoptic_lsj" = large-scale jitter,
    # "fixed" = the image as it is, for overfitting checks).
    "SOLVER": {
        "WARMUP_ITERS": 0,
        "WARMUP_FACTOR": 1.0,
        "WARMUP_METHOD": "linear",
        "POLY_LR_POWER": 0.9,
        "WEIGHT_DECAY_NORM": 0.0,
        "WEIGHT_DECAY_EMBED": 0.0,
        "BACKBONE_MULTIPLIER": 0.1,
        "CHECKPOINT_PERIOD": 5000,
        "MAX_TO_KEEP": 3,
        # AMP dtype on GPU: "float16" (with a grad scaler) or "bfloat16".
        "AMP_DTYPE": "float16",
    },
    "TEST": {
        "EVAL_PERIOD": 0,
        # Cap on images evaluated per period (0 = all); the final evaluation always reads all.
        "EVAL_MAX_IMAGES": 0,
    },
    "ENGINE": {
        "LOG_PERIOD": 20,
        # How often (iterations) the status object is written and the cancel flag is read.
        "STATUS_PERIOD": 10,
        # "" = infer (nccl on GPU, gloo on CPU).
        "DIST_BACKEND": "",
        # DDP: off, since every trainable parameter gets a gradient in every step (the SRA loss reads the
        # class embeddings the classification loss already uses; tests/trainer/test_modeling_forward.py
        # checks it). Turn on only for a model variant with parameters some steps leave unused.
        "FIND_UNUSED_PARAMETERS": False,
        # Write frozen weights (the CLIP backbone) into checkpoints too; off saves ~800 MB per checkpoint
        # for ConvNeXt-L, the backbone then comes from MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS on resume.
        "CHECKPOINT_FROZEN": True,
    },
}


def add_engine_config(cfg):
    """Add the engine's keys to a config from `get_cfg()` (in place); returns it for chaining."""
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    for key, value in ENGINE_DEFAULTS.items():
        _ensure(cfg, key, value)
    _ensure_clip_gradients(cfg)
    if was_frozen:
        cfg.freeze()
    return cfg


def _ensure_clip_gradients(cfg):
    # The model half may define SOLVER.CLIP_GRADIENTS as detectron2's node or as a plain float; both work.
    if "CLIP_GRADIENTS" not in cfg.SOLVER:
        _ensure(cfg.SOLVER, "CLIP_GRADIENTS", {
            "ENABLED": True, "CLIP_TYPE": "full_model", "CLIP_VALUE": 0.01, "NORM_TYPE": 2.0,
        })
    if "AMP" not in cfg.SOLVER:
        _ensure(cfg.SOLVER, "AMP", {"ENABLED": True})


def clip_gradients_settings(cfg) -> tuple[bool, float, float]:
    """(enabled, max_norm, norm_type) from either form of SOLVER.CLIP_GRADIENTS."""
    cg = cfg.SOLVER.CLIP_GRADIENTS
    if isinstance(cg, _YacsNode):
        enabled = bool(cg.get("ENABLED", True))
        value = float(cg.get("CLIP_VALUE", 0.01))
        norm = float(cg.get("NORM_TYPE", 2.0))
        if enabled and cg.get("CLIP_TYPE", "full_model") not in ("full_model", "norm"):
            raise ValueError(
                f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE {cg.CLIP_TYPE!r} is not supported; use 'full_model' or 'norm'"
            )
        return enabled and value > 0, value, norm
    value = float(cg or 0.0)
    return value > 0, value, 2.0


def amp_enabled(cfg) -> bool:
    amp = cfg.SOLVER.AMP
    if isinstance(amp, _YacsNode):
        return bool(amp.get("ENABLED", True))
    return bool(amp)


def _did_you_mean(name: str, choices: list[str], section: str = "") -> str:
    import difflib

    found = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean {(section + '.' if section else '') + found[0]!r}?" if found else ""


def merge_overrides(cfg, overrides) -> None:
    """Apply overrides given as a dict {"SOLVER.BASE_LR": 1e-4, ...} or a flat list [key, value, ...].

    Unknown keys raise a ValueError naming the key (the API turns it into a 422).
    """
    if not overrides:
        return
    if isinstance(overrides, dict):
        pairs = list(overrides.items())
    else:
        items = list(overrides)
        if len(items) % 2:
            raise ValueError("config overrides as a list must alternate key, value")
        pairs = list(zip(items[0::2], items[1::2]))
    for key, value in pairs:
        node = cfg
        parts = str(key).split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], _YacsNode):
                raise ValueError(f"unknown config key {key!r}: {p!r} is not a config section"
                                 + _did_you_mean(p, [k for k, v in node.items() if isinstance(v, _YacsNode)]))
            node = node[p]
        if parts[-1] not in node:
            near = _did_you_mean(parts[-1], list(node.keys()), ".".join(parts[:-1]))
            raise ValueError(f"unknown config key {key!r}" + (near or "; see docs/training.md for the keys"))
        old = node[parts[-1]]
        node[parts[-1]] = _coerce(key, value, old)


def _coerce(key, value, old):
    if isinstance(old, _YacsNode):
        raise ValueError(f"config key {key!r} is a section; set its keys one by one")
    if isinstance(value, str) and not isinstance(old, str):
        import ast

        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"config key {key!r}: cannot read {value!r} as a {type(old).__name__}") from None
    if isinstance(old, bool):
        if not isinstance(value, bool):
            raise ValueError(f"config key {key!r} takes true or false, not {value!r}")
        return value
    if isinstance(old, int) and not isinstance(old, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"config key {key!r} takes an integer, not {value!r}")
        return value
    if isinstance(old, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {key!r} takes a number, not {value!r}")
        return float(value)
    if isinstance(old, (tuple, list)):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"config key {key!r} takes a list, not {value!r}")
        return type(old)(value)
    if isinstance(old, str):
        if not isinstance(value, str):
            raise ValueError(f"config key {key!r} takes a string, not {value!r}")
        return value
    return value


def get_training_cfg(config_file: str | None = None, overrides=None, tiny: bool = False):
    """The full config: model defaults (or the tiny test model), engine keys, a YAML file, then overrides."""
    if tiny:
        from dreammask.trainer.tiny import tiny_cfg

        cfg = tiny_cfg()
    else:
        from dreammask.trainer.config import get_cfg

        cfg = get_cfg()
    add_engine_config(cfg)
    if config_file:
        cfg.merge_from_file(resolve_config_file(config_file))
    merge_overrides(cfg, overrides)
    return cfg


def resolve_config_file(name: str) -> str:
    """A YAML path, or the name of one shipped under trainer/configs/ (with or without .yaml)."""
    from pathlib import Path

    p = Path(name)
    if p.is_file():
        return str(p)
    shipped = Path(__file__).resolve().parent.parent / "configs"
    for cand in (shipped / name, shipped / f"{name}.yaml"):
        if cand.is_file():
            return str(cand)
    available = sorted(str(x.relative_to(shipped)) for x in shipped.rglob("*.yaml")) if shipped.is_dir() else []
    raise ValueError(f"config file {name!r} not found; shipped configs: {available}")
