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
