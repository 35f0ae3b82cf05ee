"""Helpers shared by the trainer tests."""

from __future__ import annotations

from fvcore.common.config import CfgNode


def d2_like_cfg() -> CfgNode:
    """The keys of detectron2's own get_cfg() that the adapter meets, with detectron2's values (detectron2
    is not installable here)."""
    cfg = CfgNode()
    cfg.MODEL = CfgNode({"META_ARCHITECTURE": "GeneralizedRCNN", "WEIGHTS": "", "DEVICE": "cuda",
                         "PIXEL_MEAN": [103.530, 116.280, 123.675], "PIXEL_STD": [1.0, 1.0, 1.0]})
    cfg.INPUT = CfgNode({"MIN_SIZE_TEST": 800, "MAX_SIZE_TEST": 1333, "FORMAT": "BGR"})
    cfg.DATASETS = CfgNode({"TRAIN": (), "TEST": ()})
    cfg.DATALOADER = CfgNode({"NUM_WORKERS": 4})
    cfg.SOLVER = CfgNode({"BASE_LR": 0.001, "WEIGHT_DECAY": 0.0001, "MAX_ITER": 40000, "IMS_PER_BATCH": 16,
                          "WARMUP_ITERS": 1000, "CHECKPOINT_PERIOD": 5000,
                          "LR_SCHEDULER_NAME": "WarmupMultiStepLR", "STEPS": (30000,), "GAMMA": 0.1,
                          "WARMUP_FACTOR": 0.001, "WARMUP_METHOD": "linear",
                          "CLIP_GRADIENTS": CfgNode({"ENABLED": False, "CLIP_TYPE": "value", "CLIP_VALUE": 1.0,
                                                     "NORM_TYPE": 2.0}),
                          "AMP": CfgNode({"ENABLED": False})})
    cfg.TEST = CfgNode({"EVAL_PERIOD": 0})
    cfg.SEED = -1
    return cfg
