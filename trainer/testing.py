"""Test helpers: the tiny model (re-exported from `tiny.py`, which production code imports) and a batch
of synthetic inputs in the model's format. Production code does not import this module."""

from __future__ import annotations

import torch

from .tiny import (  # noqa: F401  (re-exported for the tests)
    TINY_CLIP_MODEL_NAME,
    TINY_VOCABULARY,
    TINY_WEIGHTS_FILENAME,
    build_tiny_model,
    tiny_cfg,
    write_tiny_clip_weights,
)


def tiny_batch(
    synthetic: tuple[bool, ...] = (False, True),
    size: int | tuple[int, int] = 64,
    classes: tuple[tuple[int, ...], ...] | None = None,
    seed: int = 0,
) -> list[dict]:
    """Images of flat-coloured rectangles on noise, one per object, with their masks and class ids, in
    the model's input format. `classes[i]` lists image i's object classes (default: (0, 1) each)."""
    g = torch.Generator().manual_seed(seed)
    h, w = (size, size) if isinstance(size, int) else size
    classes = classes or tuple((0, 1) for _ in synthetic)
    palette = torch.tensor([[220, 40, 40], [40, 200, 60], [60, 90, 230], [230, 200, 40], [160, 60, 200]])
    batch = []
    for i, is_syn in enumerate(synthetic):
        image = torch.randint(0, 60, (3, h, w), generator=g, dtype=torch.uint8)
        masks = torch.zeros((len(classes[i]), h, w), dtype=torch.bool)
        for j, c in enumerate(classes[i]):
            # Objects side by side so they never overlap (one label per pixel, as panoptic data).
            x0 = j * w // len(classes[i]) + 2
            x1 = (j + 1) * w // len(classes[i]) - 2
            y0 = int(torch.randint(0, h // 3, (1,), generator=g))
            y1 = y0 + h // 2
            masks[j, y0:y1, x0:x1] = True
            image[:, masks[j]] = palette[c % len(palette)].to(torch.uint8)[:, None]
        batch.append(
            {
                "image": image,
                "instances": {"gt_classes": torch.tensor(classes[i], dtype=torch.long), "gt_masks": masks},
                "is_synthetic": bool(is_syn),
            }
        )
    return batch
