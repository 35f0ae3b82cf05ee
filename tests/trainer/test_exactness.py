"""What moves numbers, checked against FC-CLIP's own choices: the matcher's costs without autocast, flip
before pad, PIL resizing, detectron2's test resize, per-dataset test sizes, the seen rule's reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dreammask.shared.panoptic import id2rgb, rgb2id
from dreammask.trainer.config import get_training_cfg
from dreammask.trainer.data.mapper import PanopticDatasetMapper
from dreammask.trainer.data.transforms import (
    LargeScaleJitter,
    resize_ids,
    resize_image,
    shortest_edge_size,
)
from dreammask.trainer.modeling.matcher import HungarianMatcher, batch_dice_cost, batch_sigmoid_ce_cost


def test_matcher_costs_are_fp32_under_autocast():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 6, generator=g)
    pred = torch.randn(20, 24, 24, generator=g) * 4
    tgt = torch.rand(5, 24, 24, generator=g) > 0.6
    classes = torch.tensor([0, 1, 2, 3, 4])
    m = HungarianMatcher(2.0, 5.0, 5.0, num_points=0)
    reference = m.cost_matrix(logits, pred, classes, tgt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = m.cost_matrix(logits.bfloat16(), pred, classes, tgt)
        # what the costs would be if computed under autocast: the einsums round to bfloat16
        naive = batch_dice_cost(pred.flatten(1), tgt.flatten(1).float())
        naive_ce = batch_sigmoid_ce_cost(pred.flatten(1), tgt.flatten(1).float())
    assert under_amp.dtype == torch.float32
    assert torch.allclose(under_amp, m.cost_matrix(logits.bfloat16().float(), pred, classes, tgt), atol=0, rtol=0)
    assert torch.allclose(under_amp, reference, atol=1e-2)  # only the logits' own bf16 rounding differs
    # the check can fail: computed under autocast, these costs really change
    fp32_dice = batch_dice_cost(pred.flatten(1), tgt.flatten(1).float())
    fp32_ce = batch_sigmoid_ce_cost(pred.flatten(1), tgt.flatten(1).float())
    assert not torch.allclose(naive.float(), fp32_dice, atol=1e-5) or not torch.allclose(naive_ce.float(), fp32_ce, atol=1e-5)


def _scene(h=40, w=60, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    ids = np.zeros((h, w), dtype=np.int64)
    ids[:, : w // 3] = 5
    ids[:, w // 3:] = 1000 + np.arange(w - w // 3)[None, :] % 7  # many ids, so nearest sampling shows
    return image, ids


def _flip_seed() -> int:
    return next(s for s in range(100) if np.random.default_rng(s).random() < 0.5)


def test_lsj_flips_first_so_padding_stays_bottom_right():
    image, ids = _scene()
    lsj = LargeScaleJitter(size=96, min_scale=0.3, max_scale=0.3, random_flip=True)  # always padded
    seed = _flip_seed()
    out_img, out_ids, valid = lsj(image, ids, np.random.default_rng(seed))
    rows, cols = np.where(valid)
    assert rows.min() == 0 and cols.min() == 0  # the padding is on the bottom and right, never on the left
    assert valid[: rows.max() + 1, : cols.max() + 1].all() and not valid[:, cols.max() + 1:].any()
    assert (out_img[~valid] == 128).all() and (out_ids[~valid] == 0).all()
    # the same as flipping the input first and then jittering without a flip (FC-CLIP's transform order)
    rng = np.random.default_rng(seed)
    rng.random()  # the flip draw
    no_flip = LargeScaleJitter(size=96, min_scale=0.3, max_scale=0.3, random_flip=False)
    ref_img, ref_ids, ref_valid = no_flip(image[:, ::-1].copy(), ids[:, ::-1].copy(), rng)
    assert np.array_equal(out_img, ref_img) and np.array_equal(out_ids, ref_ids) and np.array_equal(valid, ref_valid)


def test_lsj_crop_offset_is_one_uniform_draw_for_both_axes():
    """detectron2's FixedSizeCrop: offset = round(max_offset * u) with one u ~ U(0, 1) for y and x."""
    image, ids = _scene(80, 120)
    lsj = LargeScaleJitter(size=32, min_scale=2.0, max_scale=2.0, random_flip=False)
    rng = np.random.default_rng(3)
    out_img, _, valid = lsj(image, ids, rng)
    check = np.random.default_rng(3)
    scale = check.uniform(2.0, 2.0)
    factor = min(scale * 32 / 80, scale * 32 / 120)
    nh, nw = int(np.round(80 * factor)), int(np.round(120 * factor))
    u = check.uniform(0.0, 1.0)
    y0, x0 = int(np.round((nh - 32) * u)), int(np.round((nw - 32) * u))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    assert valid.all() and np.array_equal(out_img, resized[y0:y0 + 32, x0:x0 + 32])


def test_resizing_is_pils_bilinear_and_nearest_as_detectron2():
    image, ids = _scene(50, 70)
    for h, w in ((20, 28), (101, 141)):  # down (PIL antialiases, unlike OpenCV's INTER_LINEAR) and up
        ours = resize_image(image, h, w)
        assert np.array_equal(ours, np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR)))
        # ids: detectron2 resizes the RGB-encoded panoptic PNG (uint8) with PIL nearest; same pixels picked
        rgb = np.asarray(Image.fromarray(id2rgb(ids).astype(np.uint8)).resize((w, h), Image.NEAREST))
        assert np.array_equal(resize_ids(ids, h, w), rgb2id(rgb))
    import cv2

    assert not np.array_equal(resize_image(image, 20, 28), cv2.resize(image, (28, 20), interpolation=cv2.INTER_LINEAR))


@pytest.mark.parametrize("hw,short,longest,expected", [
    ((512, 683), 800, 1333, (800, 1067)),      # ADE20K: int(683 * 800/512 + 0.5)
    ((1024, 2048), 1024, 2560, (1024, 2048)),  # Cityscapes at FC-CLIP's 1024/2560: kept
    ((1024, 2048), 800, 1333, (667, 1333)),    # Cityscapes at the default: the long side caps it
    ((375, 500), 800, 1333, (800, 1067)),
])
def test_test_resize_is_detectron2s_shortest_edge(hw, short, longest, expected):
    assert shortest_edge_size(*hw, short, longest) == expected


def test_a_datasets_own_test_size_wins_unless_turned_off():
    cfg = get_training_cfg("fcclip_convnext_large")
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (800, 1333) and cfg.TEST.DATASET_SIZES
    own = PanopticDatasetMapper.from_config(cfg, is_train=False, test_size=(1024, 2560))
    assert (own.test_resize.size, own.test_resize.max_size) == (1024, 2560)
    default = PanopticDatasetMapper.from_config(cfg, is_train=False)
    assert (default.test_resize.size, default.test_resize.max_size) == (800, 1333)
    cfg.TEST.DATASET_SIZES = False
    forced = PanopticDatasetMapper.from_config(cfg, is_train=False, test_size=(1024, 2560))
    assert (forced.test_resize.size, forced.test_resize.max_size) == (800, 1333)


def test_seen_reference_is_the_first_training_datasets_names_read_from_its_vocabulary_file():
    from dreammask.trainer.data.vocabulary import load_vocabulary_file, seen_by_synonyms
    from dreammask.trainer.engine.evaluate import seen_reference

    cfg = get_training_cfg("fcclip_convnext_large")  # DATASETS.TRAIN: COCO, which need not be on disk
    reference = seen_reference(cfg)
    assert reference == load_vocabulary_file("coco_panoptic").synonyms
    ade = load_vocabulary_file("ade20k_150")
    seen = dict(zip((s[0] for s in ade.synonyms), seen_by_synonyms(ade.synonyms, reference)))
    assert seen["person"] and seen["sofa"] and not seen["awning"] and not seen["chandelier"]
    none = get_training_cfg("tiny_test")
    assert seen_reference(none) == []  # no training dataset at all: nothing counts as seen


def _cityscapes_release(root, h: int, w: int) -> None:
    """One val image of Cityscapes' release layout (leftImg8bit, gtFine instanceIds), as small as it gets."""
    city = root / "cityscapes"
    img = city / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    img.parent.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(img)
    raw = np.full((h, w), 7, np.uint16)  # road
    raw[h // 2:, : w // 2] = 26000       # a car
    ids = city / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_instanceIds.png"
    ids.parent.mkdir(parents=True)
    Image.fromarray(raw).save(ids)


def test_cityscapes_is_evaluated_at_its_own_size_through_the_evaluator(tmp_path, tiny_model_cfg):
    """The whole path, not the mapper alone: the preparation command's output, registered under the standard
    name, evaluated by evaluate_datasets, reaches the model at Cityscapes' 1024/2560 (FC-CLIP's
    eval_cityscapes config); TEST.DATASET_SIZES off, at INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST."""
    from dreammask.trainer.data.prepare import cityscapes
    from dreammask.trainer.engine.evaluate import evaluate_datasets
    from dreammask.trainer.testing import build_tiny_model

    _cityscapes_release(tmp_path, 16, 40)
    cityscapes.prepare(tmp_path)
    model = build_tiny_model(tiny_model_cfg, seed=0)
    seen_sizes = []
    model.register_forward_pre_hook(lambda _m, args: seen_sizes.append(tuple(args[0][0]["image"].shape[1:])))

    def sizes(dataset_sizes: bool):
        cfg = tiny_model_cfg.clone()
        cfg.defrost()
        cfg.DATASETS.ROOT, cfg.DATASETS.TEST, cfg.TEST.DATASET_SIZES = str(tmp_path), ("cityscapes_panoptic_val",), dataset_sizes
        seen_sizes.clear()
        results = evaluate_datasets(model, cfg, [], {})
        assert "PQ" in results["cityscapes_panoptic_val"]  # scored, at the original resolution
        return list(seen_sizes)

    assert sizes(True) == [shortest_edge_size(16, 40, 1024, 2560)] == [(1024, 2560)]
    small = (int(tiny_model_cfg.INPUT.MIN_SIZE_TEST), int(tiny_model_cfg.INPUT.MAX_SIZE_TEST))
    assert sizes(False) == [shortest_edge_size(16, 40, *small)] != [(1024, 2560)]
