"""The one way a trainer config is built: defaults, a preset or YAML file, then `KEY VALUE` overrides.

`get_training_cfg(config_file, overrides)` serves the command line (`train_net`), benchmarks and tests;
`build_training_cfg(spec, settings)` turns a stored training request into the same call and is what the
API's check, the training runner and `train_net --training-id` use; what a request may override on a
deployment is `request_overrides`' rule, applied there. Errors are `ConfigError`s that say
which input (`config`, `tiny`, `overrides.<KEY>`) to change. No torch here.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from yacs.config import CfgNode as _YacsNode

from dreammask.shared.suggest import closest

from .defaults import CfgNode, ConfigError, get_cfg, resolve_config_file, shipped_configs

TINY_PRESET = "tiny_test"


def is_tiny_preset(name: str | None) -> bool:
    return bool(name) and Path(str(name)).name.removesuffix(".yaml") == TINY_PRESET


def merge_overrides(cfg, overrides) -> None:
    """Apply overrides given as a dict {"SOLVER.BASE_LR": 1e-4, ...} or a flat list [key, value, ...]; values
    are checked against the type of the key's default. Every bad key is reported (ConfigError)."""
    errors = []
    for key, value in _pairs(overrides):
        try:
            _set(cfg, str(key), value)
        except ValueError as e:
            errors.append((("overrides", str(key)), str(e)))
    if errors:
        raise ConfigError(errors)


def _pairs(overrides) -> list[tuple[Any, Any]]:
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    items = list(overrides)
    if len(items) % 2:
        raise ConfigError([(("overrides",), "config overrides as a list must alternate KEY VALUE")])
    return list(zip(items[0::2], items[1::2]))


def _set(cfg, key: str, value) -> None:
    node, parts = cfg, key.split(".")
    for p in parts[:-1]:
        if p not in node or not isinstance(node[p], _YacsNode):
            near = closest(p, [k for k, v in node.items() if isinstance(v, _YacsNode)])
            raise ValueError(f"unknown config key {key!r}: {p!r} is not a config section"
                             + (f"; did you mean {near!r}?" if near else ""))
        node = node[p]
    if parts[-1] not in node:
        near = closest(parts[-1], node.keys())
        where = ".".join(parts[:-1])
        raise ValueError(f"unknown config key {key!r}" + (f"; did you mean {(where + '.' if where else '') + near!r}?" if near
                                                          else "; see docs/training.md for the keys"))
    node[parts[-1]] = _coerce(key, value, node[parts[-1]])


def _coerce(key, value, old):
    if isinstance(old, _YacsNode):
        raise ValueError(f"config key {key!r} is a section; set its keys one by one")
    if isinstance(value, str) and not isinstance(old, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"config key {key!r}: cannot read {value!r} as a {type(old).__name__}") from None
    if isinstance(old, bool):
        if not isinstance(value, bool):
            raise ValueError(f"config key {key!r} takes true or false, not {value!r}")
        return value
    if isinstance(old, int):
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


# Values a key may take, checked once the config is built (so the API refuses them before queueing).
_CHOICES = {
    "INPUT.DATASET_MAPPER_NAME": ("coco_panoptic_lsj", "fixed"),
    "INPUT.RANDOM_FLIP": ("horizontal", "none"),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": ("full_model", "norm"),
    "SOLVER.AMP_DTYPE": ("float16", "bfloat16"),
    "SOLVER.LR_SCHEDULER_NAME": ("WarmupMultiStepLR", "WarmupPolyLR"),
}


def _get(cfg, key: str):
    node = cfg
    for p in key.split("."):
        node = node[p]
    return node


def check_values(cfg) -> list[tuple[tuple, str]]:
    """(input, message) for every key whose value is outside what the trainer runs."""
    errors = []
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            errors.append((("overrides", key), f"{key} {value!r} is not one of {', '.join(allowed)}"))
    if not 0.0 <= float(cfg.DATASETS.SYNTHETIC.RATIO) <= 1.0:
        errors.append((("overrides", "DATASETS.SYNTHETIC.RATIO"), "DATASETS.SYNTHETIC.RATIO must lie in [0, 1]"))
    return errors


def get_training_cfg(config_file: str | None = None, overrides=None, *, tiny: bool = False) -> CfgNode:
    """Every default, then the preset or YAML file (`tiny=True`: the tiny_test preset), then the overrides.
    Raises ConfigError listing every problem."""
    if tiny:
        if config_file and not is_tiny_preset(config_file):
            resolve_config_file(config_file)  # an unknown name is the first thing to fix
            raise ConfigError([(("config",), "tiny: true runs the tiny_test preset; remove config, or set "
                                              "tiny: false to train this one")])
        config_file = TINY_PRESET
    cfg = get_cfg()
    errors = []
    if config_file:
        try:
            cfg.merge_from_file(resolve_config_file(config_file))
        except ConfigError as e:
            errors += e.errors
        except (KeyError, ValueError) as e:
            errors.append((("config",), str(e).strip('"')))
    try:
        merge_overrides(cfg, overrides)
    except ConfigError as e:
        errors += e.errors
    if not errors:
        errors += check_values(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


# Keys a training request may not set through `overrides`, with what to use instead. The request's own fields
# are checked where they are given (datasets owned by the caller, names registered, weights the caller may
# read); an override of the same key would skip those checks. Folders and devices belong to the worker that
# runs the training, not to whoever submits it. train_net's command line (an operator's tool) is not limited.
REQUEST_FIXED_KEYS = {
    "MODEL.WEIGHTS": "set the request's `weights` field instead ('tr-<id>', 'tr-<id>/model_NNNNNNN.pth' or a "
                     "file under the models directory)",
    "DATASETS.SYNTHETIC.IDS": "list curated datasets in the request's `datasets` field instead",
    "DATASETS.TRAIN": "list real datasets in the request's `real_datasets` field instead",
    "DATASETS.TEST": "list evaluation datasets in the request's `eval_datasets` field instead",
    "MODEL.DEVICE": "the worker picks the device; ask for processes with the request's `gpus` field",
    "ENGINE.DIST_BACKEND": "the worker picks the backend for its devices; ask for processes with `gpus`",
    "OUTPUT_DIR": "a training writes under trainings/<id>/ in object storage, nothing else",
    "DATASETS.ROOT": "the deployment sets the datasets root (DREAMMASK_TRAINER_DATASETS_ROOT)",
    "DATASETS.SYNTHETIC.CACHE_DIR": "the deployment sets the cache (DREAMMASK_TRAINER_CACHE_DIR)",
    "MODEL.FC_CLIP.TEXT_CACHE_DIR": "the worker's folders are the deployment's",
    "MODEL.FC_CLIP.CLIP_MODEL_CONFIG_PATHS": "name a built-in open_clip model in MODEL.FC_CLIP.CLIP_MODEL_NAME instead",
}


def request_overrides(overrides, settings) -> tuple[dict, list[tuple[tuple, str]]]:
    """(the overrides a training request may apply on this deployment, an error for each it may not). The
    one rule for the API's check and the runner (through `build_training_cfg`): no key of REQUEST_FIXED_KEYS,
    SOLVER.MAX_ITER at most the deployment's DREAMMASK_TRAINER_MAX_ITERATIONS, and CLIP weights only under
    the models directory. Values are type-checked later, when merged."""
    allowed, errors = {}, []
    for key, value in dict(overrides or {}).items():
        key = str(key)
        if key in REQUEST_FIXED_KEYS:
            errors.append((("overrides", key), f"remove {key} from overrides: {REQUEST_FIXED_KEYS[key]}"))
            continue
        if key == "SOLVER.MAX_ITER":
            limit = int(settings.trainer_max_iterations)
            n = _number(value)
            if n is not None and n > limit:
                errors.append((("overrides", key), f"give the length in the request's `iterations` field, at most "
                                                   f"{limit} on this deployment (DREAMMASK_TRAINER_MAX_ITERATIONS); "
                                                   f"{key} {value!r} is above it"))
                continue
        if key == "MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS" and not _under_models_dir(value):
            errors.append((("overrides", key), f"give {key} as a path relative to the models directory "
                                               f"(DREAMMASK_MODELS_DIR), without '..'; {value!r} reaches outside it"))
            continue
        allowed[key] = value
    return allowed, errors


def _number(value) -> float | None:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _under_models_dir(value) -> bool:
    from .defaults import RANDOM_WEIGHTS_PREFIX

    text = str(value)
    if text.startswith(RANDOM_WEIGHTS_PREFIX):
        return True
    parts = text.replace("\\", "/").split("/")
    return bool(text) and not text.startswith(("/", "~")) and ".." not in parts and not Path(text).is_absolute()


def check_request_limits(spec, settings) -> list[tuple[tuple, str]]:
    """The deployment's limits on a request's own fields that only the trainer's settings know."""
    errors = []
    gpus = getattr(spec, "gpus", None)
    if gpus is not None and gpus > int(settings.trainer_gpus):
        errors.append((("gpus",), f"ask for at most {settings.trainer_gpus}, or leave gpus out to use them all: this "
                                  f"deployment runs {settings.trainer_gpus} per training (DREAMMASK_TRAINER_GPUS), "
                                  f"not {gpus}"))
    config = getattr(spec, "config", None)
    if config and not _is_shipped(config):
        errors.append((("config",), f"use a shipped config: {', '.join(shipped_configs())}; {config!r} is not one "
                                    "(a request names a preset, not a file)"))
    return errors


def _is_shipped(name: str) -> bool:
    """A request names a preset of trainer/configs/, never a file on the worker (which could set any key)."""
    text = str(name)
    if text.startswith("/") or ".." in text.replace("\\", "/").split("/"):
        return False
    return text in shipped_configs() or f"{text}.yaml" in shipped_configs()


def build_training_cfg(spec, settings) -> CfgNode:
    """The config of a training or evaluation request (trainer/service/schemas.py TrainingSpec) on a
    deployment (TrainerSettings): its preset, what the request asks (datasets, iterations, ratio; or the
    weights to evaluate), the deployment's folders, then the request's own overrides, which win."""
    errors = check_request_limits(spec, settings)
    if any(loc == ("config",) for loc, _ in errors):
        raise ConfigError(errors)  # nothing else can be built from a config that is not a preset
    if (spec.tiny or is_tiny_preset(spec.config)) and not settings.trainer_allow_tiny:
        errors.append((("tiny",), "this deployment does not run the tiny model (DREAMMASK_TRAINER_ALLOW_TINY)"))
    config = spec.config or (None if spec.tiny else settings.trainer_default_config)
    derived: dict[str, Any] = {
        "DATASETS.TEST": list(spec.eval_datasets),
        "DATASETS.SYNTHETIC.CACHE_DIR": str(settings.trainer_cache_dir),
    }
    if settings.trainer_datasets_root:
        derived["DATASETS.ROOT"] = str(settings.trainer_datasets_root)
    if getattr(spec, "kind", "train") == "evaluate":
        # What is scored; the runner turns a training's checkpoint ("tr-<id>...") into a local file. The
        # preset's DATASETS.TRAIN stays: its first dataset decides which classes count as seen.
        derived["MODEL.WEIGHTS"] = str(spec.weights)
    else:
        derived.update({"DATASETS.SYNTHETIC.IDS": list(spec.datasets), "DATASETS.TRAIN": list(spec.real_datasets),
                        "SOLVER.MAX_ITER": int(spec.iterations)})
        if getattr(spec, "weights", None):
            derived["MODEL.WEIGHTS"] = str(spec.weights)  # start from a checkpoint (the runner makes it local)
        if spec.synthetic_ratio is not None:
            derived["DATASETS.SYNTHETIC.RATIO"] = float(spec.synthetic_ratio)
        if not spec.real_datasets:
            derived["DATALOADER.MIN_REAL_PER_BATCH"] = 0
    try:
        cfg = get_training_cfg(config, derived, tiny=spec.tiny)
    except ConfigError as e:
        raise ConfigError(errors + [(("config",), msg) if loc[0] == "overrides" else (loc, msg)
                                    for loc, msg in e.errors]) from None
    if getattr(spec, "kind", "train") == "train" and spec.eval_datasets and int(cfg.TEST.EVAL_PERIOD) <= 0:
        merge_overrides(cfg, {"TEST.EVAL_PERIOD": int(spec.iterations)})  # evaluations asked: one at the end
    overrides, refused = request_overrides(spec.overrides, settings)
    errors += refused
    try:
        merge_overrides(cfg, overrides)
    except ConfigError as e:
        errors += e.errors
    if not errors:
        errors += check_values(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg
