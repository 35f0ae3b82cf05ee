"""The detectron2 adapter's parts that need no detectron2: config keys on a detectron2-shaped config,
dataset dicts and metadata in its format; the parts that import it fail clearly where it is absent."""

import importlib.util

import pytest
from fvcore.common.config import CfgNode

from dreammask.shared.storage import LocalObjectStore
from dreammask.trainer.d2.config import add_dreammask_config
from dreammask.trainer.d2.datasets import d2_dataset_name, synthetic_dataset_for_d2
from dreammask.trainer.data.toy import write_toy_dataset


def _d2_like_cfg():
    """The keys of detectron2's own get_cfg() that the adapter meets (detectron2 is not installed here)."""
    cfg = CfgNode()
    cfg.MODEL = CfgNode({"META_ARCHITECTURE": "GeneralizedRCNN", "WEIGHTS": "", "DEVICE": "cuda"})
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


def test_config_node_adds_model_iat_and_engine_keys_and_keeps_d2_values():
    cfg = add_dreammask_config(_d2_like_cfg())
    assert cfg.MODEL.META_ARCHITECTURE == "DreamMaskFCCLIP"
    assert cfg.MODEL.DREAMMASK.MEMORY_BANK_SIZE > 0 and cfg.MODEL.DREAMMASK.LAMBDA_SRA > 0
    assert cfg.MODEL.FC_CLIP.CLIP_MODEL_NAME == "convnext_large_d_320"
    assert cfg.DATASETS.SYNTHETIC.RATIO == 0.5 and cfg.DATALOADER.MIN_REAL_PER_BATCH == 1
    assert cfg.SOLVER.WARMUP_ITERS == 1000 and cfg.INPUT.MIN_SIZE_TEST == 800  # detectron2's values stay
    assert cfg.INPUT.IMAGE_SIZE == 1024
    # the preset YAML files merge into it
    from dreammask.trainer.engine.config import resolve_config_file

    cfg.merge_from_file(resolve_config_file("fcclip_convnext_large"))
    assert cfg.MODEL.DREAMMASK.ENABLED is False


@pytest.mark.parametrize("preset", ["fcclip_convnext_large", "dreammask_convnext_large", "tiny_test"])
def test_meta_architecture_is_ours_after_every_preset_merge(preset):
    """The presets name META_ARCHITECTURE "FCCLIP" (the platform loop's registry); detectron2 must build
    DreamMaskFCCLIP, the name its registry knows, whatever the YAML or the command line says."""
    from dreammask.trainer.d2.config import merge_d2_config

    cfg = add_dreammask_config(_d2_like_cfg())
    merge_d2_config(cfg, preset, ["MODEL.META_ARCHITECTURE", "FCCLIP", "SOLVER.MAX_ITER", "7"])
    assert cfg.MODEL.META_ARCHITECTURE == "DreamMaskFCCLIP"
    assert cfg.SOLVER.MAX_ITER == 7


def test_dataset_dicts_and_metadata_in_detectron2_format(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    write_toy_dataset(store, "ds-d2", num_images=2, size=32)
    dicts, meta = synthetic_dataset_for_d2(store, "ds-d2", tmp_path / "cache")
    assert d2_dataset_name("ds-d2") == "dreammask_synthetic_ds-d2"
    d = dicts[0]
    assert set(d) >= {"file_name", "image_id", "height", "width", "pan_seg_file_name", "segments_info"}
    assert d["is_synthetic"] is True
    assert meta["stuff_classes"] == ["sky", "grass", "cat", "awning"]
    assert meta["thing_classes"] == ["cat", "awning"]
    assert meta["thing_dataset_id_to_contiguous_id"] == {3: 2, 4: 3}
    assert meta["stuff_dataset_id_to_contiguous_id"] == {1: 0, 2: 1, 3: 2, 4: 3}
    assert meta["novel_classes"] == ["awning"]
    assert meta["panoptic_json"].endswith("ds-d2/annotations/panoptic.json")


@pytest.mark.skipif(importlib.util.find_spec("detectron2") is not None, reason="detectron2 installed")
def test_detectron2_modules_need_detectron2():
    with pytest.raises(ImportError, match="detectron2"):
        import dreammask.trainer.d2.meta_arch  # noqa: F401
