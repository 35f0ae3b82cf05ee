"""Mask helpers shared by the mask and score backends and the curation export.

COCO RLE is the storage form of every mask (``{"size": [h, w], "counts": str}``, pycocotools' compressed
counts decoded to ASCII so the dict is plain JSON). The clean-up and stability helpers work on numpy
arrays so any mask backend can use them, not only SAM.

A mask is often held as its *window* (`MaskWindow`): the part of the image around its pixels, everything
outside being background. The clean-up, the area and the RLE are computed on the window, so their cost
follows the object's size, and only the window has to leave the device that made the mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from dreammask.shared.backends import MaskResult

# RLE lives in shared (curation and the API read masks too); re-exported for the backends.
from dreammask.shared.masks import decode_rle, encode_rle, rle_area  # noqa: E402,F401


def mask_bbox(mask: np.ndarray) -> list[float]:
    """Tight pixel box ``[x0, y0, x1, y1]`` (x1/y1 exclusive) of a mask; zeros when it is empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


# ---------------------------------------------------------------------------- windows

def window_bounds(rows: tuple[int, int] | None, cols: tuple[int, int] | None,
                  shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the window of a mask whose pixels span rows [r0, r1) and columns [c0, c1):
    one background pixel more on every side that lies inside the image (the ring that joins the window
    to the background beyond it), the origin moved down to even coordinates (OpenCV's labelling scans
    2x2 blocks, so the window's labels come in the whole image's order). An empty mask: (0, 0, 0, 0)."""
    if rows is None or cols is None:
        return 0, 0, 0, 0
    h, w = shape
    return max(rows[0] - 1, 0) & ~1, min(rows[1] + 1, h), max(cols[0] - 1, 0) & ~1, min(cols[1] + 1, w)


def _span(any_along: np.ndarray) -> tuple[int, int] | None:
    idx = np.flatnonzero(any_along)
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else None


@dataclass
class MaskWindow:
    """A boolean mask of an image of `shape` (H, W), held as `data` = mask[y0:y0 + h, x0:x0 + w]; every
    pixel outside the window is background."""

    data: np.ndarray
    y0: int
    x0: int
    shape: tuple[int, int]

    @property
    def y1(self) -> int:
        return self.y0 + self.data.shape[0]

    @property
    def x1(self) -> int:
        return self.x0 + self.data.shape[1]

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> MaskWindow:
        mask = np.asarray(mask, dtype=bool)
        y0, y1, x0, x1 = window_bounds(_span(mask.any(axis=1)), _span(mask.any(axis=0)), mask.shape)
        return cls(mask[y0:y1, x0:x1], y0, x0, (int(mask.shape[0]), int(mask.shape[1])))

    def full(self) -> np.ndarray:
        """The (H, W) mask."""
        if (self.y0, self.x0) == (0, 0) and self.data.shape == tuple(self.shape):
            return self.data
        out = np.zeros(self.shape, dtype=bool)
        out[self.y0 : self.y1, self.x0 : self.x1] = self.data
        return out

    def area(self) -> int:
        return int(np.count_nonzero(self.data))

    @cached_property
    def dense(self) -> np.ndarray:
        """`full()`, made once (the data must not change afterwards)."""
        return self.full()

    @cached_property
    def tight(self) -> tuple[int, int, int, int] | None:
        """`bbox()`, computed once (the data must not change afterwards)."""
        return self.bbox()

    def bbox(self) -> tuple[int, int, int, int] | None:
        """Tight (x0, y0, x1, y1) of the mask in image pixels (x1/y1 exclusive); None when empty."""
        rows, cols = _span(self.data.any(axis=1)), _span(self.data.any(axis=0))
        if rows is None or cols is None:
            return None
        return self.x0 + cols[0], self.y0 + rows[0], self.x0 + cols[1], self.y0 + rows[1]

    def rle(self) -> dict:
        """COCO compressed RLE of the (H, W) mask, equal to `encode_rle(self.full())`, computed from the
        window (numpy only, so threads run it in parallel: pycocotools holds the GIL)."""
        h, w = self.shape
        n = h * w
        if self.data.size:
            # column-major runs of the image columns the window spans; the columns beyond are background
            cols = np.zeros((self.data.shape[1], h), dtype=np.int8)
            cols[:, self.y0 : self.y1] = self.data.T
            flat = cols.reshape(-1)
            change = np.flatnonzero(np.diff(flat, prepend=np.int8(0), append=np.int8(0)))
            bounds = np.concatenate(([0], change + self.x0 * h, [n]))
        else:
            bounds = np.array([0, n])
        counts = np.diff(bounds)
        if len(counts) > 1 and counts[-1] == 0:  # the mask runs to the last pixel: no trailing background
            counts = counts[:-1]
        return {"size": [int(h), int(w)], "counts": _rle_string(counts)}


@dataclass
class WindowMaskResult(MaskResult):
    """A mask backend's result that also holds the mask as its window (area, RLE and crops read it)."""

    window: MaskWindow | None = field(default=None, repr=False)


def _rle_string(counts: np.ndarray) -> str:
    """pycocotools' `rleToString`: each count (from the fourth on, minus the count two before) written in
    5-bit groups, low first, 0x20 marking that more follow, plus 48."""
    x = counts.astype(np.int64)
    if len(x) > 3:
        x[3:] -= counts[1:-2]
    chars = np.zeros((len(x), 14), dtype=np.uint8)  # 14 groups of 5 bits hold any int64
    valid = np.zeros(chars.shape, dtype=bool)
    alive = np.ones(len(x), dtype=bool)
    for g in range(chars.shape[1]):
        c = x & 0x1F
        x = x >> 5  # arithmetic: negative deltas end on -1
        more = np.where(c & 0x10, x != -1, x != 0)
        chars[:, g] = (c | (more.astype(np.int64) << 5)) + 48
        valid[:, g] = alive
        alive &= more
        if not alive.any():
            break
    return chars[valid].tobytes().decode("ascii")


# ---------------------------------------------------------------------------- clean-up

def _regions(mask: np.ndarray, max_area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Remove islands ("islands") or fill holes ("holes") smaller than ``max_area`` pixels, on the whole
    image: the rule of SAM's automatic mask generator (segment_anything.utils.amg.remove_small_regions),
    written on OpenCV with one lookup per pixel (linear in the components). Returns (mask, changed)."""
    import cv2

    assert mode in ("holes", "islands")
    correct_holes = mode == "holes"
    working = (correct_holes ^ mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = sizes < max_area
    if not small.any():
        return mask, False
    keep = np.zeros(n, dtype=bool)
    if correct_holes:
        keep[0] = True  # label 0: the mask itself
        keep[1:] = small
    else:
        # Keep every large island; when all are small keep the largest so the mask never vanishes.
        keep[1:] = ~small
        if not keep.any():
            keep[int(np.argmax(sizes)) + 1] = True
    return keep[labels], True


def _fill_holes_in_window(win: MaskWindow, max_area: int) -> tuple[np.ndarray, bool] | None:
    """The holes pass on the window: the background beyond it is counted into the components of the
    window's edges it touches. Returns (window, whether a piece of the background beyond the window
    is itself filled), or None when an edge that faces the outside is not all background (the window
    does not separate the mask from the rest of the image)."""
    import cv2

    data = win.data
    (h, w), (hh, ww) = data.shape, win.shape
    top, bottom, left, right = win.y0 > 0, win.y1 < hh, win.x0 > 0, win.x1 < ww
    if (top and data[0].any()) or (bottom and data[-1].any()) or (left and data[:, 0].any()) \
            or (right and data[:, -1].any()):
        return None
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~data).astype(np.uint8), connectivity=8)
    sizes = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    # The background beyond the window, as connected pieces, each with the label of the edge it touches.
    # It is one piece unless the window spans the image's width (then above and below) or its height
    # (then left and right); the ring edges of one piece meet at the window's corners.
    pieces: list[tuple[int, int]] = []
    if not (left or right) and not (top or bottom):
        pass
    elif not (left or right):
        pieces = [(win.y0 * ww, labels[0, 0])] * top + [((hh - win.y1) * ww, labels[-1, 0])] * bottom
    elif not (top or bottom):
        pieces = [(win.x0 * hh, labels[0, 0])] * left + [((ww - win.x1) * hh, labels[0, -1])] * right
    else:
        edge = labels[0, 0] if (top or left) else labels[-1, -1]
        pieces = [(hh * ww - h * w, edge)]
    for size, label in pieces:
        sizes[label] += size
    small = sizes[1:] < max_area
    if not small.any():
        return data, False
    keep = np.zeros(n, dtype=bool)
    keep[0] = True
    keep[1:] = small
    return keep[labels], any(keep[label] for _, label in pieces)


def clean_window(win: MaskWindow, min_region_area: int = 0, min_hole_area: int = 0) -> MaskWindow:
    """`clean_mask` on a mask held as its window: the same result, computed on the window.

    Holes first: filling a hole can merge what would have been separate small islands. Islands lie inside
    the window; the background beyond it joins the components of the window edges it touches, its pixels
    counted into their sizes. Only when a piece of that background is itself a hole to fill (images
    smaller than the hole area across) does the work move to the whole image, as the rule states it.
    """
    if min_hole_area <= 0 and min_region_area <= 0:
        return win
    hh, ww = win.shape
    if not win.data.any():
        # One background component, the image: filled only when the image itself is a small hole.
        if min_hole_area > hh * ww:
            return MaskWindow(np.ones(win.shape, dtype=bool), 0, 0, win.shape)
        return win
    data = win.data
    if min_hole_area > 0:
        filled = _fill_holes_in_window(win, min_hole_area)
        if filled is None or filled[1]:
            return MaskWindow(_clean_whole(win.full(), min_region_area, min_hole_area), 0, 0, win.shape)
        data = filled[0]
    if min_region_area > 0:
        data, _ = _regions(data, min_region_area, "islands")
    return MaskWindow(data, win.y0, win.x0, win.shape)


def _clean_whole(mask: np.ndarray, min_region_area: int, min_hole_area: int) -> np.ndarray:
    if min_hole_area > 0:
        mask, _ = _regions(mask, min_hole_area, "holes")
    if min_region_area > 0 and mask.any():
        mask, _ = _regions(mask, min_region_area, "islands")
    return mask


def clean_mask(mask: np.ndarray, min_region_area: int = 0, min_hole_area: int = 0) -> np.ndarray:
    """Fill holes smaller than ``min_hole_area`` and drop islands smaller than ``min_region_area``: the
    result of segment-anything's `remove_small_regions` (holes, then islands) on the whole image, computed
    on the mask's window (`clean_window`)."""
    mask = np.asarray(mask, dtype=bool)
    if min_hole_area <= 0 and min_region_area <= 0:
        return mask
    return clean_window(MaskWindow.from_mask(mask), min_region_area, min_hole_area).full()


def stability_score(logits, mask_threshold: float = 0.0, offset: float = 1.0):
    """IoU between the mask thresholded at ``t + offset`` and at ``t - offset`` (SAM's stability score).

    A mask whose extent barely moves when the logit threshold shifts is confidently delimited. Works on
    torch tensors (batched, last two dims are H, W) and numpy arrays alike.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - numpy-only installs
        torch = None
    if torch is not None and isinstance(logits, torch.Tensor):
        high = (logits > (mask_threshold + offset)).sum(dim=(-1, -2), dtype=torch.int64)
        low = (logits > (mask_threshold - offset)).sum(dim=(-1, -2), dtype=torch.int64)
        return high.float() / low.clamp(min=1).float()
    logits = np.asarray(logits)
    high = (logits > (mask_threshold + offset)).sum(axis=(-1, -2))
    low = (logits > (mask_threshold - offset)).sum(axis=(-1, -2))
    return high / np.maximum(low, 1)
