"""The trainer's config in one style: every key defined once in `config/defaults.py`, one builder for the
command line, the API and the runner, the same defaults on a detectron2 config, CLIP's normalisation in
every preset. Nothing here needs torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fvcore.common.config import CfgNode as FvCfgNode
from trainer_helpers import d2_like_cfg

from dreammask.trainer.config import (
    CLIP_PIXEL_MEAN,
    CLIP_PIXEL_STD,
    ConfigError,
    build_training_cfg,
    get_cfg,
    get_training_cfg,
    shipped_configs,
)
from dreammask.trainer.config.d2 import D2_META_ARCHITECTURE, prepare_d2_config
from dreammask.trainer.service.schemas import TrainingSpec
from dreammask.trainer.service.settings import TrainerSettings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "trainer" / "config"


def _assigned_keys(path: Path) -> list[str]:
    """Dotted keys assigned as `cfg.A.B = value` anywhere in a module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                parts = []
                while isinstance(target, ast.Attribute):
                    parts.append(target.attr)
                    target = target.value
                if isinstance(target, ast.Name) and target.id == "cfg" and parts:
                    out.append(".".join(reversed(parts)))
    return out


def _leaves(node, prefix="") -> set[str]:
    out = set()
    for k, v in node.items():
        out |= _leaves(v, f"{prefix}{k}.") if isinstance(v, FvCfgNode) else {prefix + k}
    return out


def test_every_key_is_defined_once_in_the_defaults_module():
    keys = _assigned_keys(CONFIG_DIR / "defaults.py")
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert duplicates == []
    assert set(keys) == _leaves(get_cfg())
    # no other config module defines a key; d2.py only pins the meta architecture
    for other in sorted(CONFIG_DIR.glob("*.py")):
        if other.name != "defaults.py":
            assert set(_assigned_keys(other)) <= {"MODEL.META_ARCHITECTURE"}, other.name


def test_the_two_defaults_that_used_to_disagree_take_fc_clips_values():
    cfg = get_cfg()
    # FC-CLIP's (Mask2Former's) COCO recipe: 4 loader workers, 10 warmup iterations at factor 1.0
    assert cfg.DATALOADER.NUM_WORKERS == 4 and cfg.SOLVER.WARMUP_ITERS == 10 and cfg.SOLVER.WARMUP_FACTOR == 1.0


@pytest.mark.parametrize("preset", shipped_configs())
def test_every_preset_normalises_with_clips_rgb_mean_and_std(preset):
    cfg = get_training_cfg(preset)
    assert cfg.MODEL.PIXEL_MEAN == CLIP_PIXEL_MEAN and cfg.MODEL.PIXEL_STD == CLIP_PIXEL_STD
    assert cfg.INPUT.FORMAT == "RGB"
    # also on a detectron2 config, whose own defaults are BGR with std 1
    d2 = prepare_d2_config(d2_like_cfg(), preset)
    assert d2.MODEL.PIXEL_MEAN == CLIP_PIXEL_MEAN and d2.MODEL.PIXEL_STD == CLIP_PIXEL_STD
    assert d2.INPUT.FORMAT == "RGB" and d2.MODEL.META_ARCHITECTURE == D2_META_ARCHITECTURE


def test_presets_and_inheritance():
    baseline, dreammask = get_training_cfg("fcclip_convnext_large.yaml"), get_training_cfg("dreammask_convnext_large")
    assert not baseline.MODEL.DREAMMASK.ENABLED and dreammask.MODEL.DREAMMASK.ENABLED
    assert dreammask.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 250  # inherited through _BASE_
    assert dreammask.DATASETS.TRAIN == ("coco_2017_train_panoptic",)
    tiny = get_training_cfg(tiny=True, overrides={"MODEL.DREAMMASK.LAMBDA_SRA": "0.25"})
    assert tiny.MODEL.FC_CLIP.CLIP_MODEL_NAME == "dreammask-tiny-convnext" and tiny.MODEL.DEVICE == "cpu"
    assert tiny.MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS == "random:0" and tiny.DATASETS.TRAIN == ()
    assert tiny.MODEL.DREAMMASK.LAMBDA_SRA == 0.25
    assert get_training_cfg("tiny_test").dump() == get_training_cfg(tiny=True).dump()


def test_builder_errors_name_the_input_to_change(tmp_path):
    with pytest.raises(ConfigError) as e:
        get_training_cfg("no_such_preset.yaml")
    assert e.value.errors[0][0] == ("config",) and "tiny_test.yaml" in str(e.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  DREAMMASK:\n    LAMBDA_SRAA: 2.0\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        get_training_cfg(str(bad))
    with pytest.raises(ConfigError) as e:
        get_training_cfg("tiny_test", {"SOLVER.NOPE": 1, "SOLVER.MAX_ITER": "many", "INPUT.RANDOM_FLIP": "up"})
    locs = {loc for loc, _ in e.value.errors}
    assert locs == {("overrides", "SOLVER.NOPE"), ("overrides", "SOLVER.MAX_ITER")}  # values checked after keys
    with pytest.raises(ConfigError, match="INPUT.RANDOM_FLIP 'up'"):
        get_training_cfg("tiny_test", {"INPUT.RANDOM_FLIP": "up"})
    with pytest.raises(ConfigError, match="tiny: true runs the tiny_test preset"):
        get_training_cfg("fcclip_convnext_large", tiny=True)


def test_a_training_request_becomes_a_config_through_the_same_builder(tmp_path):
    settings = TrainerSettings(trainer_cache_dir=tmp_path / "cache", trainer_datasets_root=tmp_path / "ds")
    spec = TrainingSpec(datasets=["ds-a"], real_datasets=["coco_2017_train_panoptic"],
                        eval_datasets=["ade20k_panoptic_val"], iterations=30, synthetic_ratio=0.25, tiny=True,
                        overrides={"SOLVER.BASE_LR": 5e-5, "DATASETS.SYNTHETIC.RATIO": 0.75})
    cfg = build_training_cfg(spec, settings)
    assert cfg.DATASETS.SYNTHETIC.IDS == ("ds-a",) and cfg.DATASETS.TRAIN == ("coco_2017_train_panoptic",)
    assert cfg.SOLVER.MAX_ITER == 30 and cfg.TEST.EVAL_PERIOD == 30  # evaluations asked: one at the end
    assert cfg.DATASETS.ROOT == str(tmp_path / "ds") and cfg.DATASETS.SYNTHETIC.CACHE_DIR == str(tmp_path / "cache")
    assert cfg.SOLVER.BASE_LR == 5e-5 and cfg.DATASETS.SYNTHETIC.RATIO == 0.75  # the request's overrides win
    assert cfg.DATALOADER.MIN_REAL_PER_BATCH == 1
    no_real = build_training_cfg(TrainingSpec(datasets=["ds-a"], iterations=3, tiny=True), settings)
    assert no_real.DATALOADER.MIN_REAL_PER_BATCH == 0 and no_real.TEST.EVAL_PERIOD == 0

    with pytest.raises(ConfigError) as e:
        build_training_cfg(TrainingSpec(datasets=["ds-a"], iterations=3, tiny=True,
                                        overrides={"SOLVER.BASE_LRR": 1.0, "SOLVER.MAX_ITER": "x"}),
                           TrainerSettings(trainer_allow_tiny=False))
    assert {loc for loc, _ in e.value.errors} == {("tiny",), ("overrides", "SOLVER.BASE_LRR"),
                                                 ("overrides", "SOLVER.MAX_ITER")}
    with pytest.raises(ConfigError) as e:  # the tiny preset by name is the tiny model too
        build_training_cfg(TrainingSpec(datasets=["ds-a"], iterations=3, config="tiny_test"),
                           TrainerSettings(trainer_allow_tiny=False))
    assert e.value.errors[0][0] == ("tiny",)


def test_a_detectron2_config_gets_every_key_with_this_trainers_defaults():
    cfg = prepare_d2_config(d2_like_cfg())
    assert _leaves(get_cfg()) <= _leaves(cfg)
    # this trainer's values win over detectron2's where both define a key: FC-CLIP's recipe
    assert cfg.SOLVER.WARMUP_ITERS == 10 and cfg.SOLVER.BASE_LR == 1e-4 and cfg.INPUT.FORMAT == "RGB"
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model" and cfg.SOLVER.CLIP_GRADIENTS.ENABLED
    assert cfg.MODEL.META_ARCHITECTURE == D2_META_ARCHITECTURE
    assert type(cfg.MODEL.FC_CLIP) is FvCfgNode  # new sections take the config's own node class


@pytest.mark.parametrize("preset", ["fcclip_convnext_large", "dreammask_convnext_large", "tiny_test"])
def test_meta_architecture_is_ours_after_every_preset_merge(preset):
    """The presets name META_ARCHITECTURE "FCCLIP" (the platform loop's registry); detectron2 must build
    DreamMaskFCCLIP, the name its registry knows, whatever the YAML or the command line says."""
    cfg = prepare_d2_config(d2_like_cfg(), preset, ["MODEL.META_ARCHITECTURE", "FCCLIP", "SOLVER.MAX_ITER", "7"])
    assert cfg.MODEL.META_ARCHITECTURE == "DreamMaskFCCLIP" and cfg.SOLVER.MAX_ITER == 7


@pytest.mark.parametrize("key, value, says", [
    ("MODEL.WEIGHTS", "/etc/passwd", "`weights` field"),
    ("MODEL.DEVICE", "cuda:3", "`gpus` field"),
    ("ENGINE.DIST_BACKEND", "nccl", "`gpus`"),
    ("OUTPUT_DIR", "/srv/elsewhere", "trainings/<id>/"),
    ("DATASETS.ROOT", "/home", "DREAMMASK_TRAINER_DATASETS_ROOT"),
    ("DATASETS.SYNTHETIC.CACHE_DIR", "/tmp/x", "DREAMMASK_TRAINER_CACHE_DIR"),
    ("MODEL.FC_CLIP.TEXT_CACHE_DIR", "/tmp/x", "deployment's"),
    ("MODEL.FC_CLIP.CLIP_MODEL_CONFIG_PATHS", ["/tmp/x.json"], "CLIP_MODEL_NAME"),
    ("DATASETS.SYNTHETIC.IDS", ["ds-of-someone-else"], "`datasets` field"),
    ("DATASETS.TRAIN", ["coco_2017_train_panoptic"], "`real_datasets` field"),
    ("DATASETS.TEST", ["coco_2017_val_panoptic"], "`eval_datasets` field"),
    ("MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS", "../../etc/x.bin", "relative to the models directory"),
    ("MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS", "/etc/x.bin", "relative to the models directory"),
    ("SOLVER.MAX_ITER", 101, "at most 100"),
    ("SOLVER.MAX_ITER", "1e9", "at most 100"),
])
def test_a_request_cannot_override_what_the_deployment_owns(key, value, says):
    """The request's overrides go through one rule (request_overrides) in the builder the API's check and the
    runner share: each refused key is named with what to use instead."""
    settings = TrainerSettings(trainer_max_iterations=100)
    spec = TrainingSpec(datasets=["ds-a"], iterations=3, tiny=True, overrides={key: value})
    with pytest.raises(ConfigError) as e:
        build_training_cfg(spec, settings)
    assert [loc for loc, _ in e.value.errors] == [("overrides", key)]
    assert key in e.value.errors[0][1] and says in e.value.errors[0][1]
    # the operator's command line keeps every key (no deployment limit there)
    cfg = get_training_cfg(tiny=True, overrides={key: value} if key != "SOLVER.MAX_ITER" else {key: 10 ** 6})
    assert cfg is not None


def test_a_request_may_still_override_the_recipe():
    settings = TrainerSettings(trainer_max_iterations=100)
    cfg = build_training_cfg(TrainingSpec(datasets=["ds-a"], iterations=3, tiny=True, overrides={
        "SOLVER.MAX_ITER": 100, "SOLVER.BASE_LR": 5e-5, "MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS": "open_clip/x.bin",
        "DATASETS.SYNTHETIC.RATIO": 0.25}), settings)
    assert cfg.SOLVER.MAX_ITER == 100 and cfg.MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS == "open_clip/x.bin"


def test_more_gpus_than_the_deployment_has_and_config_files_are_refused():
    settings = TrainerSettings(trainer_gpus=2)
    with pytest.raises(ConfigError) as e:
        build_training_cfg(TrainingSpec(datasets=["ds-a"], iterations=3, tiny=True, gpus=8), settings)
    assert e.value.errors[0][0] == ("gpus",) and "at most 2" in str(e.value) and "DREAMMASK_TRAINER_GPUS" in str(e.value)
    assert build_training_cfg(TrainingSpec(datasets=["ds-a"], iterations=3, tiny=True, gpus=2), settings)
    # a request names a preset, never a YAML file on the worker (which could set any key)
    with pytest.raises(ConfigError) as e:
        build_training_cfg(TrainingSpec(datasets=["ds-a"], iterations=3, config=str(CONFIG_DIR.parent / "configs" /
                                                                                    "fcclip_convnext_large.yaml")),
                           settings)
    assert e.value.errors[0][0] == ("config",) and "tiny_test.yaml" in str(e.value)
    assert build_training_cfg(TrainingSpec(datasets=["ds-a"], iterations=3, config="fcclip_convnext_large"), settings)
