"""`make demo` end to end, smaller: embedded Redis, API, workers, REST job, download, contact sheet, training."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dreammask.services.cli.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_runs_and_writes_everything_it_promises(tmp_path):
    out = tmp_path / "demo"
    assert run_demo(out, num_novel=2, images_per_category=2, image_size=96, train_iterations=2) == 0
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[0] > 96 and sheet.size[1] > 96
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    assert manifest["is_synthetic"] and manifest["images"] >= 1
    assert len([c for c in manifest["categories"] if c["is_novel"]]) == 2
    for rel in ("annotations/instances.json", "annotations/panoptic.json", "card.md"):
        assert (out / "dataset" / rel).exists(), rel
    scenes = list((out / "dataset" / "processed_dataset").glob("scene_*.json"))
    assert len(scenes) == manifest["images"]
    training = json.loads((out / "training.json").read_text())
    assert training["iteration"] == 2 and training["losses"]["total_loss"] > 0
    assert not list((out / "platform").glob("*.heartbeat"))  # every process it started has stopped
