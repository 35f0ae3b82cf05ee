"""A training loss is one `LossDef` in `LOSSES` (trainer/modeling/losses/__init__.py) and one module with its
function: the model derives its criterion's losses and `weight_dict` from the declarations, so the new loss
enters the objective (weighted, on every decoder layer it asks for) and the trainer's logs, with no other edit."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from dreammask.shared.storage import LocalObjectStore
from dreammask.trainer.config import get_training_cfg
from dreammask.trainer.data.toy import write_toy_dataset
from dreammask.trainer.engine.launch import train
from dreammask.trainer.modeling import build_model, losses
from dreammask.trainer.modeling.losses import LossDef
from dreammask.trainer.testing import TINY_VOCABULARY, tiny_batch

EXTRA_MODULE = '''
def logit_energy(criterion, outputs, targets, indices, num_masks):
    return outputs["pred_logits"].float().pow(2).mean()
'''


@pytest.fixture
def extra_loss(tmp_path, monkeypatch):
    """The new loss: its module in a folder on sys.path, its one LossDef appended to LOSSES."""
    (tmp_path / "extra_loss_module.py").write_text(EXTRA_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "extra_loss_module", raising=False)
    extra = LossDef("energy", "extra_loss_module:logit_energy", ("loss_energy",), (0.25,))
    monkeypatch.setattr(losses, "LOSSES", (*losses.LOSSES, extra))
    return extra


def test_one_lossdef_and_one_module_enter_the_objective_on_every_layer(extra_loss, tiny_model_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg)
    model.set_vocabulary(**TINY_VOCABULARY)
    model.train()
    raw = {}
    model.criterion.register_forward_hook(lambda m, i, o: raw.update(o[0]))
    out = model(tiny_batch(synthetic=(False, True)))

    aux_layers = model.predictor.num_layers
    energy_keys = {"loss_energy"} | {f"loss_energy_{i}" for i in range(aux_layers)}
    assert energy_keys <= set(out) and "loss_sra" in out and "loss_ce" in out
    for key in energy_keys:
        assert model.criterion.weight_dict[key] == 0.25
        assert raw[key].item() > 0
        assert math.isclose(out[key].item(), 0.25 * raw[key].item(), rel_tol=1e-6)
    # it trains: the summed objective's gradient reaches the class head through the new loss alone
    model.zero_grad()
    out["loss_energy"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trainable_parameters())


def test_the_new_loss_is_logged_and_summed_into_total_loss(extra_loss, tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    write_toy_dataset(store, "ds-l", num_images=2, size=32, seed=1)
    cfg = get_training_cfg(tiny=True, overrides={
        "DATASETS.SYNTHETIC.IDS": ["ds-l"], "DATALOADER.MIN_REAL_PER_BATCH": 0, "SOLVER.MAX_ITER": 2,
        "ENGINE.LOG_PERIOD": 1, "SOLVER.CHECKPOINT_PERIOD": 1000,
    })
    train(cfg, store, "trainings/tl/")
    lines = [json.loads(x) for x in store.get_bytes("trainings/tl/metrics.jsonl").decode().splitlines()]
    steps = [x for x in lines if "total_loss" in x]
    assert len(steps) == 2
    for x in steps:
        assert x["loss_energy"] > 0
        parts = sum(v for k, v in x.items() if k.startswith("loss_"))
        assert math.isclose(x["total_loss"], parts, rel_tol=1e-4), x


def test_a_loss_switched_off_by_its_config_key_is_not_built():
    cfg = get_training_cfg(tiny=True, overrides={"MODEL.DREAMMASK.ENABLED": False})
    assert [d.name for d in losses.enabled_losses(cfg)] == ["labels", "masks"]
    cfg = get_training_cfg(tiny=True)
    assert [d.name for d in losses.enabled_losses(cfg)] == ["labels", "masks", "sra"]


def test_the_weight_dict_is_derived_from_the_declarations():
    cfg = get_training_cfg(tiny=True, overrides={"MODEL.DREAMMASK.LAMBDA_SRA": 0.5})
    mf = cfg.MODEL.MASK_FORMER
    wd = losses.build_weight_dict(cfg, losses.enabled_losses(cfg), aux_layers=2)
    base = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
    assert wd == {**base, "loss_sra": 0.5, **{f"{k}_{i}": v for i in range(2) for k, v in base.items()}}


@pytest.mark.parametrize("make, message", [
    (lambda: LossDef("x", "m:f", ("loss_a", "loss_b"), (1.0,)), "one weight per key"),
    (lambda: LossDef("x", "m:f", ("a",), (1.0,)), "must start with 'loss_'"),
    (lambda: LossDef("x", "no_colon", ("loss_x",), (1.0,)), "must be 'module:function'"),
])
def test_a_malformed_lossdef_is_refused_with_the_reason(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_weight_key_missing_from_the_config_names_the_loss(monkeypatch):
    bad = LossDef("typo", "m:f", ("loss_typo",), ("MODEL.MASK_FORMER.CLASS_WIEGHT",))
    monkeypatch.setattr(losses, "LOSSES", (*losses.LOSSES, bad))
    cfg = get_training_cfg(tiny=True)
    with pytest.raises(ValueError, match=r"loss 'typo': the config has no key 'MODEL.MASK_FORMER.CLASS_WIEGHT'"):
        losses.build_weight_dict(cfg, losses.enabled_losses(cfg), aux_layers=0)


def test_the_criterion_refuses_an_unknown_loss_and_sra_without_iat():
    from dreammask.trainer.modeling.criterion import SetCriterion

    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        SetCriterion(None, {}, 0.1, 16, 3.0, 0.75, losses=("labels", "nope"))
    with pytest.raises(ValueError, match="'sra' loss needs iat"):
        SetCriterion(None, {}, 0.1, 16, 3.0, 0.75, losses=("labels", "sra"))
