"""Association pipelines: category name association (CNA) and layout planning, each with a swappable backend."""

from __future__ import annotations

from dreammask.shared.backends import AssociationBackend, Failure, LayoutBackend, LayoutRequest
from dreammask.shared.schemas import NovelCategory, SceneLayout, check_category_name


class CategoryAssociationPipeline:
    def __init__(self, backend: AssociationBackend):
        self.backend = backend

    def __call__(self, train: list[str], num_novel: int, *, seed: int) -> tuple[list[NovelCategory], list[dict]]:
        novel, dropped = self.backend.associate(train, num_novel, seed=seed)
        # Whatever the backend proposes is checked like user input before it names anything.
        train_set = {t.lower(): t for t in train}
        kept, seen = [], {}
        for cat in novel:
            try:
                cat.name = check_category_name(cat.name)
            except ValueError as e:
                dropped.append({"name": cat.name[:80], "reason": f"invalid name: {e}"})
                continue
            if cat.name.lower() in train_set:
                dropped.append({"name": cat.name, "reason": f"synonym of {train_set[cat.name.lower()]} (same name)"})
                continue
            if cat.name.lower() in seen:
                dropped.append({"name": cat.name, "reason": f"duplicate of {seen[cat.name.lower()]}"})
                continue
            seen[cat.name.lower()] = cat.name
            kept.append(cat)
        return kept[:num_novel], dropped


class LayoutPipeline:
    def __init__(self, backend: LayoutBackend):
        self.backend = backend

    def __call__(self, requests: list[LayoutRequest]) -> list[SceneLayout | Failure]:
        results = self.backend.plan(requests)
        if len(results) != len(requests):
            raise RuntimeError(f"layout backend {self.backend.name!r} returned {len(results)} layouts for "
                               f"{len(requests)} scenes")
        out: list[SceneLayout | Failure] = []
        for req, res in zip(requests, results):
            if isinstance(res, SceneLayout) and (res.scene_id != req.scene_id or res.novel_category != req.novel.name):
                res = Failure(f"layout for {res.scene_id} does not match scene {req.scene_id}/{req.novel.name}")
            if isinstance(res, SceneLayout) and len(res.objects) > req.max_objects:
                res = Failure(f"layout has {len(res.objects)} objects; the limit is {req.max_objects}")
            out.append(res)
        return out
