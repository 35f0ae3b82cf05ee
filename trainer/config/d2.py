"""The config node for detectron2: FC-CLIP's and DreamMask's keys plus the engine's, added to a
detectron2 config (`detectron2.config.get_cfg()`) the way Mask2Former's `add_maskformer2_config` does."""

from __future__ import annotations


def add_dreammask_config(cfg):
    """Add MODEL.FC_CLIP.*, MODEL.SEM_SEG_HEAD.*, MODEL.MASK_FORMER.*, MODEL.DREAMMASK.* and the engine's
    keys (DATASETS.SYNTHETIC.*, DATALOADER.MIN_REAL_PER_BATCH, ...) where missing; returns cfg."""
    from dreammask.trainer.config import add_dreammask_config as add_iat
    from dreammask.trainer.config import add_fcclip_config, get_cfg
    from dreammask.trainer.config.engine import _ensure, add_engine_config

    cfg.defrost()
    ours = get_cfg()
    tmp = type(ours)()
    tmp.MODEL = type(ours)()
    add_fcclip_config(tmp)
    add_iat(tmp)
    for key in ("FC_CLIP", "SEM_SEG_HEAD", "MASK_FORMER", "DREAMMASK"):
        if key not in cfg.MODEL:
            # As the config's own node class: yacs refuses to merge YAML into a node of another class.
            cfg.MODEL[key] = type(cfg)(_plain(tmp.MODEL[key]))
        else:
            _merge_missing(cfg.MODEL[key], tmp.MODEL[key])
    # detectron2 has these for its own mappers; FC-CLIP's LSJ mapper reads them.
    for key in ("IMAGE_SIZE", "MIN_SCALE", "MAX_SCALE", "DATASET_MAPPER_NAME"):
        _ensure(cfg.INPUT, key, ours.INPUT[key])
    for key in ("POLY_LR_POWER", "LR_SCHEDULER_NAME", "STEPS", "GAMMA", "WARMUP_FACTOR"):
        _ensure(cfg.SOLVER, key, ours.SOLVER[key])
    cfg.MODEL.META_ARCHITECTURE = D2_META_ARCHITECTURE
    add_engine_config(cfg)
    return cfg


D2_META_ARCHITECTURE = "DreamMaskFCCLIP"


def merge_d2_config(cfg, config_file: str | None = None, opts: list[str] | None = None):
    """Merge a preset (path or shipped name) and `KEY VALUE` overrides into a detectron2 config, then pin
    MODEL.META_ARCHITECTURE to the wrapper detectron2's registry knows: the shared presets say "FCCLIP",
    which names this platform's own model class, not a detectron2 meta architecture."""
    from dreammask.trainer.config.engine import resolve_config_file

    cfg.defrost()
    if config_file:
        cfg.merge_from_file(resolve_config_file(config_file))
    if opts:
        cfg.merge_from_list(list(opts))
    cfg.MODEL.META_ARCHITECTURE = D2_META_ARCHITECTURE
    return cfg


def _plain(node):
    from yacs.config import CfgNode

    return {k: _plain(v) if isinstance(v, CfgNode) else v for k, v in node.items()}


def _merge_missing(dst, src):
    from yacs.config import CfgNode

    for k, v in src.items():
        if k not in dst:
            dst[k] = type(dst)(_plain(v)) if isinstance(v, CfgNode) else v
        elif isinstance(v, CfgNode) and isinstance(dst[k], CfgNode):
            _merge_missing(dst[k], v)
