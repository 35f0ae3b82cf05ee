"""Embedded layout-to-image backend: a procedural preview renderer that draws the layout.

It exists for plumbing and demos — every box holds a textured shape in a colour derived from its category,
on a sky/ground backdrop — not for training quality. GLIGEN (`gligen`) is the production backend.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dreammask.shared.backends import RenderBackend, RenderOutput
from dreammask.shared.schemas import SceneLayout, SynthesisParams


def category_colour(name: str) -> tuple[int, int, int]:
    h = hashlib.sha256(name.encode()).digest()
    # Saturated colours away from the grey backdrop, so objects stand out of it.
    base = np.array([h[0], h[1], h[2]], dtype=np.float64)
    base = 40 + (base - base.min()) / max(1.0, np.ptp(base)) * 200
    return tuple(int(c) for c in base)


class PreviewRenderer(RenderBackend):
    name = "preview"

    def render(self, layouts: list[SceneLayout], seeds: list[int], params: SynthesisParams, image_size: int):
        return [self._render_one(layout, seed, image_size) for layout, seed in zip(layouts, seeds)]

    def _render_one(self, layout: SceneLayout, seed: int, size: int) -> RenderOutput:
        # Trusts its inputs: the size was checked at submission, the layout by its schema when read.
        g = np.random.default_rng(seed)
        yy = np.linspace(0, 1, size)[:, None, None]
        sky = np.array([150, 180, 215]) + g.normal(0, 8, 3)
        ground = np.array([120, 115, 100]) + g.normal(0, 8, 3)
        horizon = g.uniform(0.4, 0.6)
        bg = np.where(yy < horizon, sky * (1 - 0.3 * yy), ground * (0.8 + 0.3 * yy))
        bg = np.broadcast_to(bg, (size, size, 3)) + g.normal(0, 6, (size, size, 3))
        img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for obj in layout.objects:
            x0, y0, x1, y1 = (int(round(c * (size - 1))) for c in obj.box)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            colour = category_colour(obj.category)
            w, h = x1 - x0, y1 - y0
            if obj.box[2] - obj.box[0] >= 0.99:  # background stuff: a band
                draw.rectangle([x0, y0, x1, y1], fill=colour)
                continue
            # A shape that fills most of its box, inset a little so the box edge shows background.
            inset = (max(1, int(w * 0.06)), max(1, int(h * 0.06)))
            shape = [x0 + inset[0], y0 + inset[1], x1 - inset[0], y1 - inset[1]]
            kind = int(hashlib.md5(obj.category.encode()).hexdigest(), 16) % 3
            if kind == 0:
                draw.ellipse(shape, fill=colour, outline=tuple(c // 2 for c in colour), width=2)
            elif kind == 1:
                draw.rounded_rectangle(shape, radius=max(2, min(w, h) // 5), fill=colour,
                                       outline=tuple(c // 2 for c in colour), width=2)
            else:
                cx = (shape[0] + shape[2]) / 2
                draw.polygon([(cx, shape[1]), (shape[2], shape[3]), (shape[0], shape[3])], fill=colour,
                             outline=tuple(c // 2 for c in colour))
        img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
        arr = np.asarray(img).astype(np.int16) + g.integers(-5, 6, (size, size, 3))
        out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        return RenderOutput(image=out, info={"renderer": "procedural preview"})
