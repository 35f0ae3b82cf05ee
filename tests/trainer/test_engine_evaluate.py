"""Evaluation only: a checkpoint evaluated on its own gives exactly the figures the training's own
evaluation gave; evaluation runs in fp32 whatever the training's AMP; the per-class table marks FC-CLIP's
seen/unseen classes."""

from __future__ import annotations

import io
import json
import math

import torch

from dreammask.shared.storage import LocalObjectStore
from dreammask.trainer.config import get_training_cfg
from dreammask.trainer.data import register_synthetic
from dreammask.trainer.data.toy import IAT_TOY_CATEGORIES, register_toy_real_dataset, write_toy_dataset
from dreammask.trainer.engine.evaluate import evaluation_only
from dreammask.trainer.engine.launch import train
from dreammask.trainer.engine.train_loop import Trainer

BASE = [c for c in IAT_TOY_CATEGORIES if not c[3]]


def _data(tmp_path, tag: str):
    store = LocalObjectStore(tmp_path / "objects")
    register_toy_real_dataset(tmp_path / "real", f"eval_real_{tag}", num_images=3, size=48, seed=5, categories=BASE)
    write_toy_dataset(store, f"ds-eval-{tag}", num_images=3, size=48, seed=6, max_things=3,
                      categories=[(10, "cat", True, False, (220, 120, 40)), (11, "awning", True, True, (200, 40, 160))])
    register_synthetic.use_store(store, tmp_path / "cache")
    return store


def _cfg(tag: str, **extra):
    return get_training_cfg(tiny=True, overrides={
        "DATASETS.TRAIN": [f"eval_real_{tag}"], "DATASETS.SYNTHETIC.IDS": [f"ds-eval-{tag}"],
        "DATASETS.TEST": [f"eval_real_{tag}", f"synthetic:ds-eval-{tag}"],
        "SOLVER.IMS_PER_BATCH": 2, "SOLVER.MAX_ITER": 3, "SOLVER.CHECKPOINT_PERIOD": 3, "TEST.EVAL_PERIOD": 3,
        "SEED": 4, **extra,
    })


def _same(a, b) -> bool:
    """Equal figures; NaN (a group absent from the ground truth) is written None in evaluation.json."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def test_evaluation_only_gives_the_figures_of_the_trainings_own_evaluation(tmp_path):
    store = _data(tmp_path, "same")
    during = train(_cfg("same"), store, "run/")["eval"]
    ckpt = tmp_path / "objects" / "run" / "checkpoints" / "model_0000003.pth"

    # the checkpoint as this trainer wrote it (its training vocabulary inside) ...
    ours = evaluation_only(_cfg("same", **{"MODEL.WEIGHTS": str(ckpt)}), store, "eval/")
    # ... and the same weights in a bare file (no vocabulary: the seen rule comes from the config)
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    bare = tmp_path / "bare.pth"
    torch.save({"model": payload["model"]}, bare)
    from_cfg = evaluation_only(_cfg("same", **{"MODEL.WEIGHTS": str(bare)}))

    for result in (ours, from_cfg):
        assert result["weights_report"]["missing"] == [] and result["weights_report"]["unused"] == []
        assert set(result["datasets"]) == {"eval_real_same", "synthetic:ds-eval-same"}
        for name, d in result["datasets"].items():
            trained = during[name]
            checked = 0
            for key, value in d["metrics"].items():
                if key in ("eval_seconds",):
                    continue
                assert _same(value, trained[key]), (name, key, value, trained[key])
                checked += 1
            assert checked > 20  # mIoU, PQ/SQ/RQ for things and stuff, seen/unseen, novel ...
            assert d["classes"] == trained["classes"]
            assert {"mIoU", "PQ", "SQ", "RQ", "PQ_th", "PQ_st", "mIoU_seen", "mIoU_unseen"} <= set(d["metrics"])
    # the table marks FC-CLIP's seen classes (the first training dataset's) and the synthetic novel one
    rows = {r["class"]: r for r in ours["datasets"]["synthetic:ds-eval-same"]["classes"]}
    assert rows["cat"]["seen"] and not rows["awning"]["seen"] and rows["awning"]["novel"]
    written = json.loads(store.get_bytes("eval/evaluation.json"))
    assert written["datasets"].keys() == ours["datasets"].keys()
    table = store.get_bytes("eval/evaluation.md").decode()
    assert "| class | seen | novel | IoU | PQ | SQ | RQ |" in table and "| awning | unseen | novel |" in table


def test_evaluation_runs_in_fp32_while_training_steps_use_amp(tmp_path):
    store = _data(tmp_path, "fp32")
    cfg = _cfg("fp32", **{"SOLVER.MAX_ITER": 1, "TEST.EVAL_MAX_IMAGES": 2})
    cfg.freeze()
    trainer = Trainer(cfg, store, "amp/")
    # AMP is on GPUs only; force it here (bfloat16 autocast on the CPU) to see what evaluation does with it
    trainer.amp, trainer.amp_dtype = True, torch.bfloat16
    seen: list[tuple[bool, bool]] = []
    model = trainer.model
    hook = model.register_forward_pre_hook(
        lambda m, args: seen.append((m.training, torch.is_autocast_enabled("cpu"))))
    batch = next(iter(trainer.data.loader))
    trainer.run_step(batch)
    with trainer.autocast():  # even when the caller runs under autocast
        under_amp = trainer.run_evaluation()
    hook.remove()
    assert (True, True) in seen  # the training step ran under autocast ...
    assert [a for training, a in seen if not training] and not any(a for training, a in seen if not training)
    # ... the evaluation did not, so its figures are those of a plain fp32 evaluation
    plain = trainer.run_evaluation()
    for name in plain:
        for key, value in plain[name].items():
            if key != "eval_seconds":
                assert _same(value, under_amp[name][key]), (name, key)


def test_train_net_eval_only_command_line(tmp_path, capsys):
    from dreammask.trainer.train_net import main

    store = _data(tmp_path, "cli")
    train(_cfg("cli"), store, "run/")
    ckpt = tmp_path / "objects" / "run" / "checkpoints" / "model_0000003.pth"
    out = tmp_path / "out"
    import os

    os.environ["DREAMMASK_STORAGE_ROOT"] = str(tmp_path / "objects")
    try:
        assert main(["--eval-only", "--tiny", "--output-dir", str(out), "MODEL.WEIGHTS", str(ckpt),
                     "DATASETS.TRAIN", "['eval_real_cli']", "DATASETS.TEST", "['eval_real_cli']"]) == 0
    finally:
        del os.environ["DREAMMASK_STORAGE_ROOT"]
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= last["eval_real_cli"]["mIoU"] <= 100 and "PQ" in last["eval_real_cli"]
    assert json.loads((out / "evaluation.json").read_text())["datasets"]["eval_real_cli"]["classes"]
    buf = io.StringIO((out / "evaluation.md").read_text())
    assert buf.read().startswith("# Evaluation of model_0000003.pth")


def test_train_net_refuses_eval_only_with_a_training_id(tmp_path, capsys):
    """--training-id runs or resumes a stored training; with --eval-only it used to train anyway."""
    import pytest

    from dreammask.trainer.train_net import main

    with pytest.raises(SystemExit) as e:
        main(["--eval-only", "--training-id", "tr-abc", "--output-dir", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--eval-only cannot be combined with --training-id" in err and "dreammask trainings evaluate tr-abc" in err
    assert not any(tmp_path.iterdir())  # nothing read, nothing written
