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
