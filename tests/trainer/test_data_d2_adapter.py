"""The detectron2 adapter's parts that need no detectron2: config keys on a detectron2-shaped config,
dataset dicts and metadata in its format; the parts that import it fail clearly where it is absent."""

import importlib.util

import pytest
from trainer_helpers import d2_like_cfg

from dreammask.shared.storage import LocalObjectStore
from dreammask.trainer.config.d2 import prepare_d2_config
from dreammask.trainer.d2.datasets import d2_dataset_name, synthetic_dataset_for_d2
from dreammask.trainer.data.toy import write_toy_dataset


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
    cfg = prepare_d2_config(d2_like_cfg())
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
    assert type(d2_optimizer(cfg, model)).__name__ == "AdamWWithFullModelClipping"  # FC-CLIP's full_model
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    assert type(d2_optimizer(cfg, model)) is torch.optim.AdamW
