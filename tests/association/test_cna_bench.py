"""bench/cna.py's judging: the labelled list loads, unlabelled names are never counted as novel, and
names labelling one thing count as duplicates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_cna", ROOT / "bench" / "cna.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_labels_load_and_judge():
    b = _bench()
    labels = b.load_labels(ROOT / "bench" / "cna_labels.tsv")
    assert labels[("coco133", "mug")]["label"] == "train" and labels[("coco133", "frog")]["label"] == "novel"
    assert all(row["label"] in ("train", "novel") for row in labels.values())
    j = b.judge(["mug", "frog", "light bulb", "lightbulb", "no such name"], "coco133", labels)
    assert j["train"] == 3 and j["novel"] == 1 and j["unlabelled"] == 1  # mug, light bulb, lightbulb
    assert j["train_share"] == 0.75 and j["duplicates"] == 1 and j["duplicate_pairs"] == ["lightbulb = light bulb"]


def test_scene_shares():
    from dreammask.services.association.scene_prior import ScenePrior

    b = _bench()
    s = b.scenes(["awning", "stairs", "breechcloth", "zzz gadget"], ScenePrior())
    assert (s["scene_share"], s["frequent_share"], s["rare_share"], s["unknown_share"]) == (0.5, 0.5, 0.25, 0.25)
    assert s["not_scene_names"] == ["breechcloth", "zzz gadget"]
    assert b.MODES["before"] == (False, 0.0) and b.MODES["screen"] == (True, 0.0) and b.MODES["after"][0]


def test_bench_runs_on_tiny_settings(shared_cache_dir, monkeypatch, capsys):
    import json
    import sys

    monkeypatch.setenv("DREAMMASK_CACHE_DIR", str(shared_cache_dir))
    monkeypatch.setenv("DREAMMASK_CNA_LEXICAL_SCREEN", "true")  # restored after the bench sets it
    monkeypatch.setenv("DREAMMASK_CNA_SCENE_PRIOR_WEIGHT", "0.2")
    monkeypatch.setattr(sys, "argv", ["cna.py", "--num", "5", "--vocab", "common20", "--weight", "0.5"])
    _bench().main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bench"] == "cna" and result["scene_prior_weight"] == 0.5 and "coco133_after_proposed" not in result
    for mode in ("before", "screen", "after"):
        assert result[f"common20_{mode}_proposed"] == 5
        for k in ("scene_share", "frequent_share", "rare_share", "unknown_share"):
            assert 0.0 <= result[f"common20_{mode}_{k}"] <= 1.0
