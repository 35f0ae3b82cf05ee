"""The two commands docs/training.md gives for FC-CLIP's released checkpoint -> ADE20K-150 figures, read from
the page itself and run as written, with one change: overrides appended that make the model the tiny
test model (tiny_test.yaml's own keys). The downloads are small files in the releases' formats; the
checkpoint is a file in FC-CLIP's release format (FC-CLIP's names, numpy arrays) under
$DREAMMASK_MODELS_DIR. A change of flags, preset names, dataset names or paths in the docs fails here."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from dreammask.trainer.config import CONFIGS_DIR, get_training_cfg
from dreammask.trainer.engine.fcclip_weights import fcclip_name, fpn_levels_of

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"
SECTION = "## From FC-CLIP's released checkpoint to ADE20K-150 figures"


def documented_commands() -> list[list[str]]:
    """The commands of the section's bash block, continuation lines joined, environment variables as they are."""
    text = DOCS.read_text()
    section = text[text.index(SECTION):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def tiny_overrides() -> list[str]:
    """tiny_test.yaml's model and input keys as KEY VALUE pairs (what makes the full preset the tiny model)."""
    def leaves(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield prefix + k, v

    preset = yaml.safe_load((CONFIGS_DIR / "tiny_test.yaml").read_text())
    out = []
    for key, value in leaves(preset):
        if key.split(".")[0] in ("MODEL", "INPUT"):
            out += [key, repr(value) if not isinstance(value, str) else value]
    return out


def _ade20k_release(root: Path) -> None:
    """ADEChallengeData2016.zip and annotations_instance.tar, unpacked: one validation image."""
    ade = root / "ADEChallengeData2016"
    for sub in ("images/validation", "annotations/validation", "annotations_instance/validation"):
        (ade / sub).mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(
        ade / "images/validation/ADE_val_00000001.jpg")
    sem = np.zeros((24, 32), np.uint8)
    sem[:8], sem[8:16], sem[16:, :16] = 1, 3, 8  # wall, sky, bed
    Image.fromarray(sem).save(ade / "annotations/validation/ADE_val_00000001.png")
    ins = np.zeros((24, 32, 3), np.uint8)
    ins[16:, :8, 0], ins[16:, :8, 1] = 1, 1  # a bed instance (instance class 1 -> SceneParse 8)
    Image.fromarray(ins).save(ade / "annotations_instance/validation/ADE_val_00000001.png")


def _released_checkpoint(path: Path, overrides: list[str]) -> int:
    """A checkpoint of the tiny model in FC-CLIP's release format: {"model": FC-CLIP names -> numpy arrays}."""
    from dreammask.trainer.modeling import build_model

    cfg = get_training_cfg("fcclip_convnext_large", overrides)
    torch.manual_seed(3)
    state = build_model(cfg).state_dict()
    levels = fpn_levels_of(state)
    path.parent.mkdir(parents=True)
    torch.save({"model": {fcclip_name(k, levels): v.numpy() for k, v in state.items()}, "__author__": "FC-CLIP"},
               path)
    return len(state)


def test_the_documented_two_commands_give_ade20k_figures(tmp_path, monkeypatch, capsys):
    from dreammask.trainer.data.prepare.__main__ import main as prepare_main
    from dreammask.trainer.train_net import main as train_net_main

    commands = documented_commands()
    assert [c[:3] for c in commands] == [["python", "-m", "dreammask.trainer.data.prepare"],
                                         ["python", "-m", "dreammask.trainer.train_net"]]
    prepare, evaluate = commands
    assert "--eval-only" in evaluate and "MODEL.WEIGHTS" in evaluate

    datasets, models = tmp_path / "datasets", tmp_path / "models"
    _ade20k_release(datasets)
    monkeypatch.setenv("DREAMMASK_DATASETS", str(datasets))
    monkeypatch.setenv("DREAMMASK_MODELS_DIR", str(models))
    monkeypatch.setenv("DREAMMASK_STORAGE_ROOT", str(tmp_path / "objects"))
    monkeypatch.chdir(tmp_path)
    tiny = tiny_overrides()
    weights = Path(os.path.expandvars(evaluate[evaluate.index("MODEL.WEIGHTS") + 1]))
    assert weights.is_relative_to(models)  # the docs name the file under the models directory
    n_tensors = _released_checkpoint(weights, tiny)

    assert prepare_main([os.path.expandvars(a) for a in prepare[3:]]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dataset"] == "ade20k"

    assert train_net_main([os.path.expandvars(a) for a in evaluate[3:]] + tiny) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    figures = printed["ade20k_panoptic_val"]
    # what the docs say the second command prints
    for key in ("mIoU", "PQ", "SQ", "RQ", "PQ_th", "PQ_st", "mIoU_seen", "mIoU_unseen", "PQ_seen", "PQ_unseen"):
        assert key in figures, key
    assert 0 <= figures["mIoU"] <= 100
    assert printed["weights_report"] == f"loaded {n_tensors} of {n_tensors} tensors; 0 missing, 0 unused, 0 with other shapes"

    out_dir = Path(evaluate[evaluate.index("--output-dir") + 1])
    table = (tmp_path / out_dir / "evaluation.md").read_text()
    assert "## ade20k_panoptic_val" in table and "seen" in table and "unseen" in table
    rows = json.loads((tmp_path / out_dir / "evaluation.json").read_text())["datasets"]["ade20k_panoptic_val"]["classes"]
    assert len(rows) == 150
    # FC-CLIP's seen rule, from the preset's first training dataset (COCO): ADE20K-150 has classes of both kinds
    seen = {r["class"]: r["seen"] for r in rows}
    assert seen["bed"] is True and {True, False} == set(seen.values())
