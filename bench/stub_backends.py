"""Backends for the pipeline benchmark, loaded with DREAMMASK_PLUGINS=["stub_backends"] (bench/ on PYTHONPATH).

`noop`: no work at all (what is left is platform overhead). `sleep`: a fixed time per scene, a stand-in for
GPU work, set by DREAMMASK_BENCH_SLEEP_<STAGE>_MS."""

from __future__ import annotations

import os
import time

import numpy as np
from PIL import Image

from dreammask.shared.backends import (
    AssociationBackend,
    LayoutBackend,
    MaskBackend,
    MaskResult,
    RenderBackend,
    RenderOutput,
    ScoreBackend,
)
from dreammask.shared.registry import register_backend
from dreammask.shared.schemas import LayoutObject, NovelCategory, SceneLayout


def _sleep(stage: str, n: int = 1) -> None:
    ms = float(os.environ.get(f"DREAMMASK_BENCH_SLEEP_{stage.upper()}_MS", "0"))
    if ms:
        time.sleep(ms * n / 1000)


class StubAssociation(AssociationBackend):
    def associate(self, train, num_novel, *, seed):
        _sleep("association")
        return [NovelCategory(name=f"novel thing {i}", nearest_train=train[0], score=0.5, source=self.name)
                for i in range(num_novel)], []


class StubLayout(LayoutBackend):
    def plan(self, requests):
        _sleep("layout", len(requests))
        return [SceneLayout(job_id=r.job_id, scene_id=r.scene_id, scene_index=r.scene_index,
                            novel_category=r.novel.name, caption=f"a {r.novel.name}", seed=r.seed,
                            backend=self.name,
                            objects=[LayoutObject(category=r.novel.name, box=[0.25, 0.25, 0.75, 0.75], is_novel=True)])
                for r in requests]


class StubRenderer(RenderBackend):
    def render(self, layouts, seeds, params, image_size):
        _sleep("synthesis", len(layouts))
        return [RenderOutput(image=Image.new("RGB", (image_size, image_size), (120, 120, 120))) for _ in layouts]


class StubMasks(MaskBackend):
    def segment(self, image, boxes):
        _sleep("masks")
        out = []
        for x0, y0, x1, y1 in np.asarray(boxes, dtype=int):
            m = np.zeros(image.shape[:2], bool)
            m[y0:y1, x0:x1] = True
            out.append(MaskResult(mask=m, scores={}))
        return out


class StubScores(ScoreBackend):
    def score(self, image, masks, boxes, targets, vocabulary):
        _sleep("scores")
        return [{"quality": 1.0} for _ in masks]


for _name in ("noop", "sleep"):
    register_backend("association", _name, type(f"{_name}Association", (StubAssociation,), {"name": _name}))
    register_backend("layout", _name, type(f"{_name}Layout", (StubLayout,), {"name": _name}))
    register_backend("synthesis", _name, type(f"{_name}Renderer", (StubRenderer,), {"name": _name}))
    register_backend("masks", _name, type(f"{_name}Masks", (StubMasks,), {"name": _name}))
    register_backend("scores", _name, type(f"{_name}Scores", (StubScores,), {"name": _name}))
