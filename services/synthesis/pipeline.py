"""The layout-to-image pipeline: one swappable renderer, per-scene seeds, outputs checked."""

from __future__ import annotations

from collections.abc import Iterator

from dreammask.shared.backends import Failure, RenderBackend, RenderOutput
from dreammask.shared.schemas import SceneLayout, SynthesisParams


class SynthesisPipeline:
    def __init__(self, renderer: RenderBackend):
        self.renderer = renderer

    def __call__(self, layouts: list[SceneLayout], seeds: list[int], params: SynthesisParams,
                 image_size: int) -> list[RenderOutput | Failure]:
        out: list[RenderOutput | Failure | None] = [None] * len(layouts)
        for batch in self.batches(layouts, seeds, params, image_size):
            for i, res in batch:
                out[i] = res
        return out  # type: ignore[return-value]

    def batches(self, layouts: list[SceneLayout], seeds: list[int], params: SynthesisParams,
                image_size: int) -> Iterator[list[tuple[int, RenderOutput | Failure]]]:
        """[(index into layouts, checked output), ...] per batch as the renderer finishes it. Renderers
        with `render_batches` (GPU batches) stream; the others give their whole result as one batch."""
        if len(layouts) != len(seeds):
            raise ValueError("one seed per layout")
        stream = getattr(self.renderer, "render_batches", None)
        if stream is None:
            results = self.renderer.render(layouts, seeds, params, image_size)
            if len(results) != len(layouts):
                raise RuntimeError(
                    f"renderer {self.renderer.name!r} returned {len(results)} images for {len(layouts)}")
            stream = lambda *_: iter([list(enumerate(results))])  # noqa: E731
        seen: set[int] = set()
        for batch in stream(layouts, seeds, params, image_size):
            checked = []
            for i, res in batch:
                if i in seen or not 0 <= i < len(layouts):
                    raise RuntimeError(f"renderer {self.renderer.name!r} returned scene index {i} twice or out of range")
                seen.add(i)
                # The renderer's output is checked here, once (the inputs were checked at submission).
                if isinstance(res, RenderOutput) and tuple(res.image.size) != (image_size, image_size):
                    res = Failure(f"renderer returned a {res.image.size} image; {image_size}x{image_size} was asked")
                checked.append((i, res))
            yield checked
        if len(seen) != len(layouts):
            raise RuntimeError(f"renderer {self.renderer.name!r} returned {len(seen)} images for {len(layouts)}")
