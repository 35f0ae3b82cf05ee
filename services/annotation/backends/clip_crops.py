"""The two crops CLIP scores per instance, cut on the host (OpenCV) or on the device (matrix products).

Both cut the same square region around the instance's box and mask (plus a margin), pad what lies
outside the image with CLIP's mean colour, and resize it to CLIP's input size; the masked crop also sets
every pixel outside the mask to that colour. The device path exists so that a GPU worker never sends
crops through the host: the image is already on the device (SAM uploaded it), only the masks go up (each
mask's tight box, padded into one array per batch).

On the device every crop is two matrix products with OpenCV's resize weights. They are computed for a
whole batch of instances at once, since cut one by one (a dozen small kernels and a weight matrix each)
the crops of a task cost more in kernel launches than in arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..device_io import to_device
from ..mask_ops import MaskWindow

if TYPE_CHECKING:
    import torch

# Device memory one batch of device crops may take in float work (the regions' pixels, their masked
# copies, both stacked, and the half-resized products): instances beyond it go in further batches. A
# region of a 1024 px image takes up to 63 MB, so a GPU task's crops fit in a few batches.
CROP_BATCH_BYTES = 1 << 30


def _square_region(box, mask_box, margin: float) -> tuple[int, int, int]:
    """(x0, y0, side): a square around the union of the prompt box and the mask's box, plus a margin."""
    x0, y0, x1, y1 = box
    if mask_box is not None:
        x0, y0 = min(x0, mask_box[0]), min(y0, mask_box[1])
        x1, y1 = max(x1, mask_box[2]), max(y1, mask_box[3])
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    side_i = max(int(round(side)), 2)
    return int(round(cx - side_i / 2.0)), int(round(cy - side_i / 2.0)), side_i


def _window(src: np.ndarray, x0: int, y0: int, side: int, fill) -> np.ndarray:
    """The (side, side) window of `src` at (x0, y0), parts outside the image taking `fill`: a view when the
    window lies inside the image (OpenCV reads it in place), else one padded copy."""
    import cv2

    h, w = src.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if (sx0, sy0, sx1, sy1) == (x0, y0, x0 + side, y0 + side):
        return src[y0 : y0 + side, x0 : x0 + side]
    if sx1 <= sx0 or sy1 <= sy0:
        out = np.empty((side, side) + src.shape[2:], dtype=src.dtype)
        out[...] = fill
        return out
    value = [int(v) for v in np.atleast_1d(fill)]
    return cv2.copyMakeBorder(src[sy0:sy1, sx0:sx1], sy0 - y0, y0 + side - sy1, sx0 - x0, x0 + side - sx1,
                              cv2.BORDER_CONSTANT, value=value + [0] * (4 - len(value)))


def _masked(crop: np.ndarray, keep: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """The crop where `keep` (uint8, non-zero inside) is set and `fill` elsewhere. OpenCV's masked copy
    runs per plane: on interleaved RGB it is several times slower than on the three planes."""
    import cv2

    planes = []
    for plane, value in zip(cv2.split(crop), fill, strict=True):
        out = np.full(keep.shape, value, dtype=np.uint8)
        cv2.copyTo(plane, keep, out)
        planes.append(out)
    return cv2.merge(planes)


def instance_crops(
    image: np.ndarray, masks: list[np.ndarray], boxes: np.ndarray, size: int, margin: float, mean_rgb: np.ndarray,
    views: tuple[str, ...] | None = None,
):
    """Box crops and masked crops, each (N, size, size, 3) uint8; with `views`, {view: crops} of those only."""
    import cv2

    fill = np.asarray(mean_rgb, dtype=np.uint8)
    wanted = views or ("masked", "box")
    box_crops = np.empty((len(masks), size, size, 3), dtype=np.uint8) if "box" in wanted else None
    masked_crops = np.empty((len(masks), size, size, 3), dtype=np.uint8) if "masked" in wanted else None
    for i, (mask, box) in enumerate(zip(masks, boxes, strict=True)):
        mask = np.asarray(mask, dtype=bool)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        mask_box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) if rows.size else None
        x0, y0, side = _square_region(box, mask_box, margin)
        crop = _window(image, x0, y0, side, fill)
        keep = _window(mask.view(np.uint8), x0, y0, side, np.uint8(0))
        interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
        if box_crops is not None:
            cv2.resize(crop, (size, size), dst=box_crops[i], interpolation=interp)
        if masked_crops is not None:
            cv2.resize(_masked(crop, keep, fill), (size, size), dst=masked_crops[i], interpolation=interp)
    if views is not None:
        return {"box": box_crops, "masked": masked_crops}
    return box_crops, masked_crops


@dataclass
class _Region:
    """Where one instance's crop comes from: output position, image, the square region (x0, y0, side)
    and the part of it inside the image, [sy0, sy1) x [sx0, sx1), and the instance's mask."""

    index: int
    image: int
    x0: int
    y0: int
    side: int
    sx0: int
    sy0: int
    sx1: int
    sy1: int
    window: MaskWindow


def _resize_weights(side, offset, length, width: int, size: int, shrink: bool, longest: int):
    """(n, size, width) float32: for each instance k, the weight of line pixel `offset[k] + j` (j <
    `length[k]`; 0 beyond) in each of the `size` output pixels, resizing a line of `side[k]` pixels as
    OpenCV does for the crops: INTER_AREA when shrinking (each output pixel the mean of the input it
    covers, partial pixels by their overlap, overlaps under 1e-3 dropped), INTER_CUBIC otherwise (A =
    -0.75, pixel centres aligned, taps beyond the line clamped to its ends). `side`, `offset`,
    `length`: (n,) int64 tensors on the device, `longest` the largest side (known on the host: reading it
    from the device would wait for it); computed in float64, as one line at a time would be."""
    import torch

    device = side.device
    steps = torch.arange(width, device=device)
    pos = offset[:, None] + steps  # (n, width)
    valid = steps[None, :] < length[:, None]
    ratio = side.double()[:, None] / size  # (n, 1)
    out_pixels = torch.arange(size, device=device, dtype=torch.float64)[None, :]  # (1, size)
    if shrink:
        lo = (out_pixels * ratio)[:, :, None]  # (n, size, 1)
        scale = ratio[:, :, None]
        j = pos.double()[:, None, :]
        overlap = (torch.minimum(lo + scale, j + 1) - torch.maximum(lo, j)).clamp(min=0)
        weights = torch.where(overlap > 1e-3, overlap, 0.0).div(scale)
    else:
        a = -0.75
        fx = (out_pixels + 0.5) * ratio - 0.5  # (n, size)
        ix = fx.floor()
        t = fx - ix
        w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
        w1 = ((a + 2) * t - (a + 3)) * t * t + 1
        w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
        taps = (ix[:, :, None] + torch.arange(-1, 3, device=device, dtype=torch.float64)).long()
        taps = torch.minimum(taps.clamp(min=0), (side - 1)[:, None, None])
        line = torch.zeros(side.shape[0], size, longest, device=device, dtype=torch.float64)
        line.scatter_add_(2, taps, torch.stack([w0, w1, w2, 1 - w0 - w1 - w2], dim=2))
        index = pos.clamp(max=longest - 1)[:, None, :].expand(-1, size, -1)
        weights = line.gather(2, index)
    return (weights * valid[:, None, :]).float()


def _regions(items, margin: float) -> list[_Region]:
    out = []
    index = 0
    for a, (image, windows, boxes) in enumerate(items):
        h, w = int(image.shape[0]), int(image.shape[1])
        for box, win in zip(boxes, windows, strict=True):
            x0, y0, side = _square_region(box, win.tight, margin)
            sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
            if sx1 > sx0 and sy1 > sy0:  # else the region lies outside the image: both crops are the mean colour
                out.append(_Region(index, a, x0, y0, side, sx0, sy0, sx1, sy1, win))
            index += 1
    return out


def _batches(regions: list[_Region], size: int, views: int) -> list[list[_Region]]:
    """Regions of one image size and one resize kind, largest first, cut where the padded batch (every
    region padded to the batch's first, largest one) would exceed `CROP_BATCH_BYTES`."""
    out: list[list[_Region]] = []
    per_instance = 0
    for r in sorted(regions, key=lambda r: max(r.sy1 - r.sy0, r.sx1 - r.sx0), reverse=True):
        if out and (len(out[-1]) + 1) * per_instance <= CROP_BATCH_BYTES:
            out[-1].append(r)
            continue
        extent = max(r.sy1 - r.sy0, r.sx1 - r.sx0)
        per_instance = 4 * 3 * ((2 * views + 1) * extent * extent + views * size * (extent + size))
        out.append([r])
    return out


def device_crops_many(items, size: int, margin: float, mean_rgb: np.ndarray,
                      views: tuple[str, ...] = ("masked", "box"), upload=None) -> torch.Tensor:
    """`instance_crops` on the device for several images: `items` holds (image, windows, boxes) per image,
    the image uint8 (H, W, 3) already on the device, each mask a `MaskWindow` (its tight box is
    uploaded). Returns float32 (len(views), N, 3, size, size) in [0, 255], N the instances of all images
    in order, rounded like OpenCV's uint8 output. Same regions and padding as the host crops.

    The instances are cut in batches (same image size, same resize kind, within `CROP_BATCH_BYTES`):
    each batch gathers its regions' pixels into one padded tensor, computes every instance's resize
    weights at once (`_resize_weights`, zero beyond the region) and resizes all its crops with two
    batched matrix products; the masks' tight boxes go up padded into one array per batch. `upload`: how a host
    array reaches the device (default: pinned, non-blocking)."""
    import torch

    if not items:
        raise ValueError("device_crops_many needs at least one image")
    device = items[0][0].device
    upload = upload or (lambda array: to_device(array, device))
    fill = to_device(np.asarray(mean_rgb, dtype=np.float32), device)  # (3,)
    n_total = sum(len(windows) for _, windows, _ in items)
    out = fill.view(3, 1, 1).expand(len(views), n_total, 3, size, size).clone()
    regions = _regions(items, margin)
    groups: dict[tuple, list[_Region]] = {}
    for r in regions:
        key = (tuple(items[r.image][0].shape[:2]), r.side > size)
        groups.setdefault(key, []).append(r)
    pixels: dict[tuple[int, int], tuple[torch.Tensor, dict[int, int]]] = {}
    for (shape, shrink), members in groups.items():
        if shape not in pixels:  # the images of this size, stacked, the mean colour at 0
            which = sorted({r.image for r in regions if tuple(items[r.image][0].shape[:2]) == shape})
            stack = torch.stack([items[a][0] for a in which]).float() - fill
            pixels[shape] = (stack, {a: k for k, a in enumerate(which)})
        stack, local = pixels[shape]
        h, w = shape
        for batch in _batches(members, size, len(views)):
            rows, cols = max(r.sy1 - r.sy0 for r in batch), max(r.sx1 - r.sx0 for r in batch)
            geo = upload(np.array([[local[r.image], r.sy0, r.sx0, r.sy1 - r.sy0, r.sx1 - r.sx0, r.sy0 - r.y0,
                                    r.sx0 - r.x0, r.side, r.index] for r in batch], dtype=np.int64))
            img, sy0, sx0, rh, rw, offy, offx, side, index = geo.unbind(1)
            ys = (sy0[:, None] + torch.arange(rows, device=device)).clamp(max=h - 1)
            xs = (sx0[:, None] + torch.arange(cols, device=device)).clamp(max=w - 1)
            patch = stack[img[:, None, None], ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)  # (n, 3, R, C)
            planes = []
            for view in views:
                if view == "box":
                    planes.append(patch)
                    continue
                keep = np.zeros((len(batch), rows, cols), dtype=bool)
                for k, r in enumerate(batch):
                    win = r.window
                    if win.tight is not None:
                        tx0, ty0, tx1, ty1 = win.tight
                        keep[k, ty0 - r.sy0 : ty1 - r.sy0, tx0 - r.sx0 : tx1 - r.sx0] = \
                            win.data[ty0 - win.y0 : ty1 - win.y0, tx0 - win.x0 : tx1 - win.x0]
                planes.append(patch * upload(keep)[:, None])
            longest = max(r.side for r in batch)
            my = _resize_weights(side, offy, rh, rows, size, shrink, longest)  # (n, size, R)
            mx = _resize_weights(side, offx, rw, cols, size, shrink, longest)  # (n, size, C)
            resized = my[:, None] @ torch.stack(planes, dim=1).flatten(1, 2) @ mx.transpose(1, 2)[:, None]
            out[:, index] += resized.view(len(batch), len(views), 3, size, size).transpose(0, 1)
    return out.round_().clamp_(0, 255)


def device_crops(image, windows: list, boxes: np.ndarray, size: int, margin: float, mean_rgb: np.ndarray,
                 views: tuple[str, ...] = ("masked", "box"), upload=None) -> torch.Tensor:
    """`device_crops_many` for one image."""
    return device_crops_many([(image, windows, boxes)], size, margin, mean_rgb, views, upload)
