"""Checkpoint save + resume reproduces exactly the steps an uninterrupted run takes."""

import json

import torch

from dreammask.shared.storage import LocalObjectStore
from dreammask.trainer.config import get_training_cfg
from dreammask.trainer.data import register_synthetic
from dreammask.trainer.data.toy import register_toy_real_dataset, write_toy_dataset
from dreammask.trainer.engine.train_loop import Trainer


def _cfg():
    cfg = get_training_cfg(tiny=True, overrides={
        "DATASETS.TRAIN": ["toy_real_ckpt"], "DATASETS.SYNTHETIC.IDS": ["ds-ckpt"],
        "SOLVER.IMS_PER_BATCH": 2, "SOLVER.MAX_ITER": 4, "SOLVER.CHECKPOINT_PERIOD": 2,
        "SOLVER.MAX_TO_KEEP": 0, "ENGINE.LOG_PERIOD": 1, "SEED": 3,
    })
    cfg.freeze()
    return cfg


def _metrics(store, prefix):
    lines = [json.loads(x) for x in store.get_bytes(prefix + "metrics.jsonl").decode().splitlines()]
    return {x["iteration"]: x for x in lines if "total_loss" in x}


def test_resume_reproduces_the_next_steps(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    register_toy_real_dataset(tmp_path / "real", "toy_real_ckpt", num_images=3, size=48, seed=8)
    write_toy_dataset(store, "ds-ckpt", num_images=3, size=48, seed=9)
    register_synthetic.use_store(store, tmp_path / "cache")

    full = Trainer(_cfg(), store, "trainings/full/")
    full_result = full.train()
    full_metrics = _metrics(store, "trainings/full/")
    full_params = {n: p.detach().clone() for n, p in full.model.named_parameters()}

    # An interrupted run: the same first two steps, then a new process resumes from model_0000002.
    first = Trainer(_cfg(), store, "trainings/resumed/")
    first.max_iter = 2
    first.train()
    assert store.get_bytes("trainings/resumed/last_checkpoint").decode() == "model_0000002.pth"
    resumed = Trainer(_cfg(), store, "trainings/resumed/")
    assert resumed.start_iter == 2
    resumed_result = resumed.train()
    resumed_metrics = _metrics(store, "trainings/resumed/")

    assert sorted(resumed_metrics) == [0, 1, 2, 3]
    for it in (2, 3):
        for key in ("total_loss", "loss_sra", "loss_ce", "lr"):
            assert resumed_metrics[it][key] == full_metrics[it][key], (it, key)
    assert resumed_metrics[2]["loss_sra"] > 0  # the restored memory bank took part
    for n, p in resumed.model.named_parameters():
        assert torch.equal(p, full_params[n]), n
    assert resumed_result["params_checksum"] == full_result["params_checksum"]


def test_checkpoint_of_another_vocabulary_is_refused(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    write_toy_dataset(store, "ds-v", num_images=2, size=48, seed=1)
    register_synthetic.use_store(store, tmp_path / "cache")
    cfg = get_training_cfg(tiny=True, overrides={
        "DATASETS.SYNTHETIC.IDS": ["ds-v"], "DATALOADER.MIN_REAL_PER_BATCH": 0, "SOLVER.MAX_ITER": 1})
    Trainer(cfg, store, "trainings/v/").train()
    payload = torch.load(tmp_path / "objects/trainings/v/checkpoints/model_0000001.pth", weights_only=True)
    assert payload["iteration"] == 1 and "optimizer" in payload and "rng" in payload
    payload["model"]["not_a_parameter"] = torch.zeros(1)
    import io

    buf = io.BytesIO()
    torch.save(payload, buf)
    store.put_bytes("trainings/v/checkpoints/model_0000001.pth", buf.getvalue())
    import pytest

    with pytest.raises(RuntimeError, match="does not fit the model"):
        Trainer(cfg, store, "trainings/v/")
