from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from segment_anything.utils.amg import calculate_stability_score, remove_small_regions

from dreammask.services.annotation.mask_ops import (
    clean_mask,
    decode_rle,
    encode_rle,
    mask_bbox,
    rle_area,
    stability_score,
)
from dreammask.shared.schemas import RLE


@pytest.mark.parametrize("shape", [(1, 1), (7, 9), (64, 48), (300, 200)])
def test_rle_round_trip(shape):
    rng = np.random.default_rng(shape[0])
    mask = rng.random(shape) > 0.6
    rle = encode_rle(mask)
    assert rle["size"] == [shape[0], shape[1]] and isinstance(rle["counts"], str)
    RLE.model_validate(rle)  # the stored schema accepts it as is
    back = decode_rle(rle)
    assert back.dtype == bool and back.shape == shape
    assert np.array_equal(back, mask)
    assert rle_area(rle) == int(mask.sum())


def test_rle_of_empty_and_full_masks_and_model_input():
    for mask in (np.zeros((5, 6), bool), np.ones((5, 6), bool)):
        assert np.array_equal(decode_rle(RLE.model_validate(encode_rle(mask))), mask)


def test_uncompressed_rle_from_coco_files():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    # column-major run lengths, as in COCO's iscrowd annotations
    flat = mask.flatten(order="F")
    runs, current, n = [], False, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    runs.append(n)
    assert np.array_equal(decode_rle({"size": [4, 5], "counts": runs}), mask)
    with pytest.raises(ValueError, match="sum to"):
        decode_rle({"size": [4, 5], "counts": [1, 2]})


def test_bad_rle_input():
    with pytest.raises(ValueError, match="one \\(H, W\\) mask"):
        encode_rle(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match="'size'"):
        decode_rle({"counts": "x"})


def test_clean_mask_matches_segment_anything_rule():
    rng = np.random.default_rng(1)
    mask = rng.random((80, 80)) > 0.55
    mask[10:50, 10:50] = True
    mask[20:23, 20:23] = False  # a 9-pixel hole
    ours = clean_mask(mask, min_region_area=30, min_hole_area=30)
    ref, _ = remove_small_regions(mask, 30, "holes")
    ref, _ = remove_small_regions(ref, 30, "islands")
    assert np.array_equal(ours, ref)
    assert ours[21, 21]  # the hole is filled
    assert ours.sum() != mask.sum()


@pytest.mark.parametrize("seed", range(40))
def test_clean_mask_on_the_mask_box_equals_the_whole_image_rule(seed):
    """clean_mask works on the mask's box when it can; random masks (small and large, inside the image or
    touching its border, with holes open to the outside or closed) give what the rule gives on the whole
    image."""
    rng = np.random.default_rng(seed)
    h, w = rng.integers(12, 90, 2)
    mask = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 5)):
        bh, bw = rng.integers(1, h // 2 + 2), rng.integers(1, w // 2 + 2)
        y, x = rng.integers(-2, h - 1), rng.integers(-2, w - 1)
        mask[max(y, 0) : y + bh, max(x, 0) : x + bw] = True
    mask ^= rng.random((h, w)) > 0.9  # speckle: small holes and islands
    if seed % 10 == 0:
        mask[:] = False
    for hole, island in [(30, 30), (0, 25), (25, 0), (5, 200), (200, 0), (h * w, 3)]:
        ref = mask
        if hole:
            ref, _ = remove_small_regions(ref, hole, "holes")
        if island and ref.any():
            ref, _ = remove_small_regions(ref, island, "islands")
        assert np.array_equal(clean_mask(mask, island, hole), ref), (hole, island)


def test_clean_mask_counts_the_background_beyond_the_mask_box():
    mask = np.zeros((60, 60), bool)
    mask[20:26, 30:36] = True  # its box and ring hold 40 background pixels; the image holds 3 564
    assert np.array_equal(clean_mask(mask, 0, 200), mask)


def test_clean_mask_keeps_largest_when_all_small_and_noop_when_off():
    mask = np.zeros((30, 30), bool)
    mask[2:4, 2:4] = True
    mask[20:23, 20:23] = True
    kept = clean_mask(mask, min_region_area=100)
    assert kept.sum() == 9 and kept[21, 21]
    assert np.array_equal(clean_mask(mask, 0, 0), mask)


def test_stability_score_matches_segment_anything():
    import torch

    logits = torch.randn(4, 32, 32) * 3
    ours = stability_score(logits, 0.0, 1.0)
    ref = calculate_stability_score(logits, 0.0, 1.0)
    assert torch.allclose(ours, ref)
    assert np.allclose(stability_score(logits.numpy(), 0.0, 1.0), ref.numpy())


def test_mask_bbox_matches_pycocotools():
    mask = np.zeros((20, 30), bool)
    mask[3:9, 4:17] = True
    x0, y0, x1, y1 = mask_bbox(mask)
    assert [x0, y0, x1 - x0, y1 - y0] == list(mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))))
    assert mask_bbox(np.zeros((3, 3), bool)) == [0.0, 0.0, 0.0, 0.0]


def _reference_clean(mask, island, hole):
    ref = mask
    if hole:
        ref, _ = remove_small_regions(ref, hole, "holes")
    if island and ref.any():
        ref, _ = remove_small_regions(ref, island, "islands")
    return ref


@pytest.mark.parametrize("p", [0.5, 0.8, 0.97])
def test_clean_mask_on_many_component_masks(p):
    """Noise masks with hundreds to thousands of islands and holes (what random-weight SAM masks look
    like): the linear pass gives segment-anything's result, and at tiny thresholds keeps the largest."""
    rng = np.random.default_rng(int(p * 100))
    mask = rng.random((400, 300)) > p
    import cv2

    n = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1
    assert n > 300  # many components
    for hole, island in [(100, 100), (0, 30), (30, 0), (0, 10**6), (7, 3)]:
        assert np.array_equal(clean_mask(mask, island, hole), _reference_clean(mask, island, hole)), (hole, island)


@pytest.mark.parametrize("seed", range(60))
def test_masks_touching_the_border_are_cleaned_on_their_window(seed, monkeypatch):
    """Masks whose box touches one, two, three or four image borders (the background beyond the window
    then lies on fewer sides, or falls apart into two pieces when the window spans the width or the
    height) are cleaned on their window, with the whole-image result."""
    from dreammask.services.annotation import mask_ops

    rng = np.random.default_rng(seed)
    h, w = rng.integers(20, 80, 2)
    mask = np.zeros((h, w), bool)
    y0, x0 = rng.integers(0, h // 3), rng.integers(0, w // 3)
    y1, x1 = rng.integers(2 * h // 3, h + 1), rng.integers(2 * w // 3, w + 1)
    # choose the borders touched: each side flush with the image or not
    y0, x0 = (0 if seed & 1 else y0), (0 if seed & 2 else x0)
    y1, x1 = (h if seed & 4 else y1), (w if seed & 8 else x1)
    mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > 0.25
    # a ring around the middle: a hole that only the window's background count tells from the outside
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    mask[cy - 4 : cy + 5, cx - 4 : cx + 5] = True
    mask[cy - 2 : cy + 3, cx - 2 : cx + 3] = False
    whole = []
    real = mask_ops._clean_whole
    monkeypatch.setattr(mask_ops, "_clean_whole", lambda *a: whole.append(1) or real(*a))
    for hole, island in [(min(h, w), 5), (12, 12), (0, 40), (19, 0)]:
        assert np.array_equal(clean_mask(mask, island, hole), _reference_clean(mask, island, hole)), (hole, island)
    # never the whole image: the background beyond the window (at least an image row or column) is never
    # a hole when the image is wider and higher than the hole threshold
    assert whole == []
    assert np.array_equal(clean_mask(mask, 5, h * w), _reference_clean(mask, 5, h * w))


def test_a_small_background_beyond_the_window_is_filled_as_a_hole():
    """Where the background beyond the window is itself smaller than the hole threshold (tiny images),
    it is filled as the whole-image rule fills it."""
    mask = np.ones((6, 7), bool)
    mask[0, :] = False  # a background strip of 7 pixels along the top
    mask[3, 3] = False
    for hole in (5, 8, 50):
        assert np.array_equal(clean_mask(mask, 0, hole), _reference_clean(mask, 0, hole)), hole
    assert clean_mask(mask, 0, 8).all()
    empty = np.zeros((3, 3), bool)
    assert clean_mask(empty, 0, 10).all() and not clean_mask(empty, 0, 9).any()


@pytest.mark.parametrize("seed", range(30))
def test_window_rle_and_area_equal_pycocotools(seed):
    from dreammask.services.annotation.mask_ops import MaskWindow

    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 70, 2)
    mask = np.zeros((h, w), bool)
    if seed % 5:
        y, x = rng.integers(0, h), rng.integers(0, w)
        mask[y : y + rng.integers(1, h + 1), x : x + rng.integers(1, w + 1)] = True
        mask &= rng.random((h, w)) > rng.uniform(0, 0.6)
    if seed % 7 == 0:
        mask[:] = True
    win = MaskWindow.from_mask(mask)
    assert win.rle() == encode_rle(mask)
    assert win.area() == int(mask.sum()) and np.array_equal(win.full(), mask)
    assert (list(win.bbox()) if mask.any() else [0.0] * 4) == mask_bbox(mask)
    # large counts (several 5-bit groups, negative differences)
    big = np.zeros((3000, 2000), bool)
    big[1234:2999, 7:1500] = True
    assert MaskWindow.from_mask(big).rle() == encode_rle(big)
