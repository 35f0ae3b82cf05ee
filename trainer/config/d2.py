"""The trainer's keys on a detectron2 config (`detectron2.config.get_cfg()`), for `trainer/d2/`.

The same `add_<x>_config` functions as `get_cfg()` run on detectron2's node, so a detectron2 run reads this
trainer's defaults (CLIP's RGB pixel normalisation, FC-CLIP's schedule, ...) where detectron2's own differ,
then the preset and the command line merge as usual.
"""

from __future__ import annotations

from .build import check_values
from .defaults import ConfigError, add_trainer_config, resolve_config_file

D2_META_ARCHITECTURE = "DreamMaskFCCLIP"


def prepare_d2_config(cfg, config_file: str | None = None, opts: list[str] | None = None):
    """Add every key with this trainer's default, merge a preset (path or shipped name) and `KEY VALUE`
    overrides, then pin MODEL.META_ARCHITECTURE to the wrapper detectron2's registry knows: the presets say
    "FCCLIP", this platform's own model class, not a detectron2 meta architecture. Returns cfg."""
    cfg.defrost()
    add_trainer_config(cfg)
    if config_file:
        cfg.merge_from_file(resolve_config_file(config_file))
    if opts:
        cfg.merge_from_list(list(opts))
    errors = check_values(cfg)
    if errors:
        raise ConfigError(errors)
    cfg.MODEL.META_ARCHITECTURE = D2_META_ARCHITECTURE
    return cfg
