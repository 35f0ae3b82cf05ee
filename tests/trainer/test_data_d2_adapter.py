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


def _amp_trainer_steps(fused: bool, scaled: bool, steps: int = 5):
    """detectron2's AMPTrainer.run_step (scale, backward, GradScaler.step, update; no unscale_) with the
    clipping optimizer of the detectron2 path, on the CPU; returns (weights, norms the clip saw, true norms)."""
    import torch

    from dreammask.trainer.engine.optim import add_full_model_gradient_clipping

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(40, 16))
    x = torch.randn(8, 40)
    opt = add_full_model_gradient_clipping(torch.optim.AdamW([w], lr=1e-2, fused=fused), 0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, enabled=scaled)
    seen, true = [], []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (x @ w).pow(2).mean()
        scaler.scale(loss).backward()
        true.append(float(w.grad.norm()) / (2.0 ** 16 if scaled else 1.0))
        scaler.step(opt)
        scaler.update()
        seen.append(float(opt.last_grad_norm))
    return w.detach().clone(), seen, true


def test_full_model_clipping_sees_the_true_norm_under_amp_with_a_fused_optimizer():
    """The bug this guards: with a fused AdamW, GradScaler.step skips unscale_ (the fused kernel unscales),
    so the clip measured loss-scaled gradients (65536x too large) and shrank every update."""
    import torch

    w_amp, seen, true = _amp_trainer_steps(fused=True, scaled=True)
    assert seen == pytest.approx(true, rel=1e-5)  # before the fix: about 65536 x the true norm
    w_plain, seen_plain, _ = _amp_trainer_steps(fused=True, scaled=False)
    assert seen_plain == pytest.approx(seen, rel=1e-5)
    assert torch.allclose(w_amp, w_plain, atol=1e-6)  # the same training as without loss scaling
    w_unfused, _, _ = _amp_trainer_steps(fused=False, scaled=True)
    assert torch.allclose(w_amp, w_unfused, atol=1e-5)


def test_standard_datasets_for_detectrons_catalogs():
    """ADE20K-150 (panoptic and semantic), ADE20K-847, Pascal Context, Cityscapes and COCO, with the metadata
    detectron2's catalog gets, under their own prefix (detectron2's builtin catalog holds some of the names)."""
    from dreammask.trainer.d2.datasets import D2_BUILTIN_PREFIX, d2_builtin_entries

    entries = {ours: (d2_name, meta) for d2_name, ours, meta in d2_builtin_entries("/data")}
    assert {"ade20k_panoptic_val", "ade20k_sem_seg_val", "ade20k_full_sem_seg_val", "pascal_context_59_sem_seg_val",
            "pascal_context_459_sem_seg_val", "cityscapes_panoptic_val", "coco_2017_val_panoptic"} <= set(entries)
    d2_name, ade = entries["ade20k_panoptic_val"]
    assert d2_name == D2_BUILTIN_PREFIX + "ade20k_panoptic_val" and ade["evaluator_type"] == "coco_panoptic_seg"
    assert len(ade["stuff_classes"]) == 150 and len(ade["thing_classes"]) == 100
    assert ade["panoptic_json"] == "/data/ADEChallengeData2016/ade20k_panoptic_val.json"
    assert ade["sem_seg_root"] == "/data/ADEChallengeData2016/annotations_detectron2/validation"
    full = entries["ade20k_full_sem_seg_val"][1]
    assert full["evaluator_type"] == "sem_seg" and full["ignore_label"] == 65535 and len(full["stuff_classes"]) == 847


def test_d2_test_is_the_platform_evaluation_and_restores_the_training_vocabulary(tmp_path):
    """DefaultTrainer.test of the detectron2 path: the same figures as the platform loop's evaluation, on the
    model inside detectron2's wrapper; the training vocabulary and the memory bank are back after."""
    import torch

    from dreammask.trainer.config import get_training_cfg
    from dreammask.trainer.d2.parts import d2_test
    from dreammask.trainer.data import register_synthetic
    from dreammask.trainer.data.toy import IAT_TOY_CATEGORIES, register_toy_real_dataset
    from dreammask.trainer.engine.train_loop import Trainer

    base = [c for c in IAT_TOY_CATEGORIES if not c[3]]
    register_toy_real_dataset(tmp_path / "real", "d2_eval_real", num_images=3, size=32, categories=base)
    store = LocalObjectStore(tmp_path / "objects")
    write_toy_dataset(store, "ds-d2eval", num_images=3, size=32, seed=4, max_things=3,
                      categories=[(10, "cat", True, False, (220, 120, 40)), (11, "awning", True, True, (200, 40, 160))])
    register_synthetic.use_store(store, tmp_path / "cache")
    cfg = get_training_cfg(tiny=True, overrides={
        "DATASETS.TRAIN": ["d2_eval_real"], "DATASETS.SYNTHETIC.IDS": ["ds-d2eval"],
        "DATASETS.TEST": ["d2_eval_real", "synthetic:ds-d2eval"], "SOLVER.MAX_ITER": 2, "SEED": 1})
    cfg.freeze()
    trainer = Trainer(cfg, None, "")
    trainer.train()

    class Wrapper(torch.nn.Module):  # detectron2's DreamMaskFCCLIP holds the model as `.model`
        def __init__(self, model):
            super().__init__()
            self.model = model

    bank = {n: b.clone() for n, b in trainer.model.named_buffers() if "bank" in n}
    ours = trainer.run_evaluation(final=True)
    d2 = d2_test(cfg, Wrapper(trainer.model), trainer.vocabulary)
    for name in ours:
        for key, value in ours[name].items():
            if key != "eval_seconds":
                assert value == d2[name][key] or (value != value and d2[name][key] != d2[name][key]), (name, key)
    assert trainer.model.class_names == trainer.vocabulary.names and trainer.model.training
    assert bank and all(torch.equal(b, dict(trainer.model.named_buffers())[n]) for n, b in bank.items())


def test_d2_eval_only_with_resume_is_refused():
    """detectron2's --eval-only --resume scores OUTPUT_DIR's last checkpoint; this entry scores MODEL.WEIGHTS,
    so the pair is refused rather than scoring another checkpoint than expected."""
    from argparse import Namespace

    import pytest

    from dreammask.trainer.d2.parts import check_d2_args

    with pytest.raises(SystemExit, match="drop --resume"):
        check_d2_args(Namespace(eval_only=True, resume=True))
    check_d2_args(Namespace(eval_only=True, resume=False))
    check_d2_args(Namespace(eval_only=False, resume=True))
