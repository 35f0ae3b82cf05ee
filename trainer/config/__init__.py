"""The trainer's configuration, in one package (detectron2 style):

- `model`: the model's keys (FC-CLIP, Mask2Former, DreamMask IAT), `get_cfg()`, `load_config()`;
- `engine`: the keys of the data, engine, evaluation and service half, `add_engine_config()`,
  `get_training_cfg()` (both halves, a preset and overrides);
- `d2`: the same keys added to a detectron2 config, for the thin detectron2 adapter (`trainer/d2/`).
"""

from .model import (
    CLIP_PIXEL_MEAN,
    CLIP_PIXEL_STD,
    CONFIGS_DIR,
    CfgNode,
    add_dreammask_config,
    add_fcclip_config,
    get_cfg,
    load_config,
)

__all__ = ["CLIP_PIXEL_MEAN", "CLIP_PIXEL_STD", "CONFIGS_DIR", "CfgNode", "add_dreammask_config",
           "add_fcclip_config", "get_cfg", "load_config"]
