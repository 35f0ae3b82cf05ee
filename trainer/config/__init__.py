"""The trainer's configuration (detectron2 style), one package, no torch:

- `defaults`: every key and its default, one `add_<x>_config(cfg)` per section, `get_cfg()`;
- `build`: the one builder, `get_training_cfg(config_file, overrides)` (defaults, a preset or YAML file,
  `KEY VALUE` overrides) and `build_training_cfg(spec, settings)` for a stored training request, which
  applies `request_overrides` (what a request may not override) and the deployment's limits;
- `d2`: the same keys and presets on a detectron2 config, for the thin detectron2 path (`trainer/d2/`).
"""

from .build import (
    REQUEST_FIXED_KEYS,
    TINY_PRESET,
    build_training_cfg,
    get_training_cfg,
    merge_overrides,
    request_overrides,
)
from .defaults import (
    CLIP_PIXEL_MEAN,
    CLIP_PIXEL_STD,
    CONFIGS_DIR,
    RANDOM_WEIGHTS_PREFIX,
    CfgNode,
    ConfigError,
    add_dreammask_config,
    add_fcclip_config,
    add_trainer_config,
    get_cfg,
    resolve_config_file,
    shipped_configs,
)

__all__ = [
    "CLIP_PIXEL_MEAN", "CLIP_PIXEL_STD", "CONFIGS_DIR", "RANDOM_WEIGHTS_PREFIX", "REQUEST_FIXED_KEYS", "TINY_PRESET",
    "CfgNode", "ConfigError", "add_dreammask_config", "add_fcclip_config", "add_trainer_config",
    "build_training_cfg", "get_cfg", "get_training_cfg", "merge_overrides", "request_overrides",
    "resolve_config_file", "shipped_configs",
]
