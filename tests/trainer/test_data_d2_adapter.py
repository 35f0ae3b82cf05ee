"""The detectron2 adapter's parts that need no detectron2: config keys on a detectron2-shaped config,
dataset dicts and metadata in its format; the parts that import it fail clearly where it is absent."""

import importlib.util

import pytest
from fvcore.common.config import CfgNode

from dreammask.shared.storage import LocalObjectStore
from dreammask.trainer.config.d2 import add_dreammask_config
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
    from dreammask.trainer.config.engine import resolve_config_file

    cfg.merge_from_file(resolve_config_file("fcclip_convnext_large"))
    assert cfg.MODEL.DREAMMASK.ENABLED is False


@pytest.mark.parametrize("preset", ["fcclip_convnext_large", "dreammask_convnext_large", "tiny_test"])
def test_meta_architecture_is_ours_after_every_preset_merge(preset):
    """The presets name META_ARCHITECTURE "FCCLIP" (the platform loop's registry); detectron2 must build
    DreamMaskFCCLIP, the name its registry knows, whatever the YAML or the command line says."""
    from dreammask.trainer.config.d2 import merge_d2_config

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


def test_full_model_gradient_clipping_clips_all_parameters_together_before_step():
    import torch

    from dreammask.trainer.engine.optim import add_full_model_gradient_clipping

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    opt = add_full_model_gradient_clipping(torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0), 0.5)
    a.grad, b.grad = torch.full((3,), 3.0), torch.full((4,), 4.0)
    opt.step()
    total = torch.cat([a.grad, b.grad]).norm()
    assert float(total) == pytest.approx(0.5, rel=1e-4)
    assert float(torch.cat([a, b]).detach().norm()) == pytest.approx(0.5, rel=1e-4)  # the step used clipped grads
    assert isinstance(opt, torch.optim.SGD)


def test_d2_training_data_remaps_class_ids_into_the_union_and_mixes(tmp_path):
    from dreammask.trainer.d2.parts import d2_optimizer, d2_train_data, vocabulary_kwargs
    from dreammask.trainer.data import register_synthetic
    from dreammask.trainer.data.toy import IAT_TOY_CATEGORIES, register_toy_real_dataset

    base = [c for c in IAT_TOY_CATEGORIES if not c[3]]
    register_toy_real_dataset(tmp_path / "real", "d2_real", num_images=3, size=32, categories=base)
    store = LocalObjectStore(tmp_path / "objects")
    # the curated export numbers its classes its own way: cat is 10 there, awning 11
    write_toy_dataset(store, "ds-d2mix", num_images=3, size=32, seed=4, max_things=3,
                      categories=[(10, "cat", True, False, (220, 120, 40)), (11, "awning", True, True, (200, 40, 160))])
    register_synthetic.use_store(store, tmp_path / "cache")
    cfg = add_dreammask_config(_d2_like_cfg())
    cfg.DATASETS.TRAIN = ("d2_real",)
    cfg.DATASETS.SYNTHETIC.IDS = ("ds-d2mix",)
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.DATASET_MAPPER_NAME = "fixed"
    data = d2_train_data(cfg)
    names = data.vocabulary.names
    assert names == ["sky", "grass", "cat", "table", "awning"]
    batch = next(iter(data.loader))
    syn = [x for x in batch if x["is_synthetic"]]
    assert len(syn) == 2 and len(batch) == 4  # DATASETS.SYNTHETIC.RATIO 0.5
    for x in syn:
        assert set(x["instances"]["gt_classes"].tolist()) <= {names.index("cat"), names.index("awning")}
    kw = vocabulary_kwargs(data.vocabulary)
    assert kw["class_names"] == names and all(kw["seen"]) and kw["thing_flags"] == [False, False, True, True, True]

    import torch

    model = torch.nn.Linear(2, 2)
    opt = d2_optimizer(cfg, model)  # detectron2's CLIP_GRADIENTS from _d2_like_cfg: disabled
    assert type(opt) is torch.optim.AdamW
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED, cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = True, "full_model"
    assert type(d2_optimizer(cfg, model)).__name__ == "AdamWWithFullModelClipping"
