"""A contact sheet: scene thumbnails with their masks and labels drawn, for a quick look at a dataset."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dreammask.shared.masks import decode_rle
from dreammask.shared.schemas import SceneAnnotation

PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40],
], dtype=np.float64)


def draw_scene(image: np.ndarray, ann: SceneAnnotation, kept: dict[int, bool] | None = None,
               thumb: int = 256, title: str | None = None,
               masks: dict[int, np.ndarray] | None = None) -> Image.Image:
    """Masks blended over the image (rejected instances hatched grey), one label per instance. `masks`
    (instance id -> decoded mask) spares decoding the RLEs again."""
    out = image.astype(np.float64).copy()
    for i, inst in enumerate(ann.instances):
        m = masks[inst.instance_id] if masks is not None else decode_rle(inst.mask.model_dump())
        ok = True if kept is None else kept.get(inst.instance_id, False)
        colour = PALETTE[i % len(PALETTE)] if ok else np.array([128.0, 128.0, 128.0])
        out[m] = out[m] * 0.5 + colour * 0.5
    im = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    scale = thumb / max(im.size)
    im = im.resize((max(1, int(im.size[0] * scale)), max(1, int(im.size[1] * scale))), Image.BILINEAR)
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    for i, inst in enumerate(ann.instances):
        x0, y0, x1, y1 = (c * scale for c in inst.bbox)
        ok = True if kept is None else kept.get(inst.instance_id, False)
        colour = tuple(int(c) for c in (PALETTE[i % len(PALETTE)] if ok else (128, 128, 128)))
        d.rectangle([x0, y0, x1, y1], outline=colour, width=1)
        label = inst.category + ("*" if inst.is_novel else "") + ("" if ok else " (dropped)")
        d.text((x0 + 2, y0 + 1), label[:28], fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    if title:
        d.text((3, im.size[1] - 12), title[:40], fill=(255, 255, 0), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    return im


def contact_sheet(tiles: list[Image.Image], columns: int = 5, pad: int = 4, caption: str = "") -> Image.Image:
    if not tiles:
        tiles = [Image.new("RGB", (256, 64), (40, 40, 40))]
    tw = max(t.size[0] for t in tiles)
    th = max(t.size[1] for t in tiles)
    cols = min(columns, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    header = 18 if caption else 0
    sheet = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + pad) + pad + header), (24, 24, 24))
    d = ImageDraw.Draw(sheet)
    if caption:
        d.text((pad, 3), caption[:200], fill=(255, 255, 255), font=ImageFont.load_default())
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet.paste(t, (pad + c * (tw + pad), header + pad + r * (th + pad)))
    return sheet
