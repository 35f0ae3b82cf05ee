"""The layout-to-image pipeline: one swappable renderer, per-scene seeds, outputs checked."""

from __future__ import annotations

from dreammask.shared.backends import Failure, RenderBackend, RenderOutput
from dreammask.shared.schemas import SceneLayout, SynthesisParams


class SynthesisPipeline:
    def __init__(self, renderer: RenderBackend):
        self.renderer = renderer

    def __call__(self, layouts: list[SceneLayout], seeds: list[int], params: SynthesisParams,
                 image_size: int) -> list[RenderOutput | Failure]:
        if len(layouts) != len(seeds):
            raise ValueError("one seed per layout")
        results = self.renderer.render(layouts, seeds, params, image_size)
        if len(results) != len(layouts):
            raise RuntimeError(f"renderer {self.renderer.name!r} returned {len(results)} images for {len(layouts)}")
        out: list[RenderOutput | Failure] = []
        for res in results:
            if isinstance(res, RenderOutput) and tuple(res.image.size) != (image_size, image_size):
                res = Failure(f"renderer returned a {res.image.size} image; {image_size}x{image_size} was asked")
            out.append(res)
        return out
