"""The box decoder that shares the image-only work computes segment-anything's `MaskDecoder`."""

from __future__ import annotations

import pytest
import torch

from dreammask.services.annotation.backends.sam import SamArchitecture, build_sam
from dreammask.services.annotation.backends.sam_decoder import (
    _is_stock_upscaling,
    decode_boxes,
    prepare_image,
)

# A small encoder in front of SAM's standard decoder (256 channels, two two-way blocks, 8 heads).
ARCH = SamArchitecture(
    encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2, encoder_global_attn_indexes=(0,),
    image_size=256, window_size=4,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_sam(ARCH)


def _inputs(model, n_boxes, seed=0):
    g = torch.Generator().manual_seed(seed)
    side = ARCH.image_size // ARCH.patch_size
    features = torch.randn(1, ARCH.prompt_embed_dim, side, side, generator=g)
    xy = torch.rand(n_boxes, 2, generator=g) * 180
    wh = torch.rand(n_boxes, 2, generator=g) * 70 + 4
    boxes = torch.cat([xy, xy + wh], dim=1)
    return features, boxes


def _stock(model, features, boxes):
    sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
    low_res, iou = model.mask_decoder(features, model.prompt_encoder.get_dense_pe(), sparse, dense, True)
    best = iou.argmax(dim=1)
    rows = torch.arange(len(boxes))
    return low_res[rows, best], iou[rows, best], best


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_same_as_segment_anything_mask_decoder(model, chunk):
    features, boxes = _inputs(model, 7, seed=chunk)
    with torch.inference_mode():
        ref_logits, ref_iou, _ = _stock(model, features, boxes)
        prepared = prepare_image(model, features)
        parts = [decode_boxes(model, prepared, model.prompt_encoder(points=None, boxes=boxes[s : s + chunk],
                                                                    masks=None)[0])
                 for s in range(0, len(boxes), chunk)]
    logits = torch.cat([p[0] for p in parts])
    iou = torch.cat([p[1] for p in parts])
    assert logits.shape == ref_logits.shape == (7, 4 * 16, 4 * 16)
    scale = ref_logits.abs().max().item()
    assert (logits - ref_logits).abs().max().item() <= 1e-5 * scale
    assert torch.allclose(iou, ref_iou, atol=1e-6)


def test_the_image_only_work_runs_once_per_image(model):
    features, boxes = _inputs(model, 5, seed=11)
    block = model.mask_decoder.transformer.layers[0]
    calls = {"k": 0, "q": 0}
    hooks = [
        block.cross_attn_token_to_image.k_proj.register_forward_hook(lambda *a: calls.__setitem__("k", calls["k"] + 1)),
        block.cross_attn_image_to_token.q_proj.register_forward_hook(lambda *a: calls.__setitem__("q", calls["q"] + 1)),
    ]
    try:
        with torch.inference_mode():
            prepared = prepare_image(model, features)
            for b in boxes:
                decode_boxes(model, prepared, model.prompt_encoder(points=None, boxes=b[None], masks=None)[0])
    finally:
        for h in hooks:
            h.remove()
    assert calls == {"k": 1, "q": 1}  # not once per box


def test_other_upscaling_modules_run_as_they_are(model):
    """A decoder whose upscaling is not segment-anything's (here one extra layer) goes through its own
    module, with the same result as the stock decoder computes with it."""
    features, boxes = _inputs(model, 4, seed=5)
    stock = model.mask_decoder.output_upscaling
    assert _is_stock_upscaling(stock)
    model.mask_decoder.output_upscaling = torch.nn.Sequential(*stock, torch.nn.Identity())
    try:
        assert not _is_stock_upscaling(model.mask_decoder.output_upscaling)
        with torch.inference_mode():
            ref_logits, ref_iou, _ = _stock(model, features, boxes)
            prepared = prepare_image(model, features)
            logits, iou = decode_boxes(model, prepared, model.prompt_encoder(points=None, boxes=boxes, masks=None)[0])
    finally:
        model.mask_decoder.output_upscaling = stock
    assert (logits - ref_logits).abs().max().item() <= 1e-5 * ref_logits.abs().max().item()
    assert torch.allclose(iou, ref_iou, atol=1e-6)


def test_boxes_of_several_images_in_one_call(model):
    """Each box reads its own image's state (`image_index`): three images, boxes interleaved, one call,
    against segment-anything's decoder image by image."""
    images = [_inputs(model, n, seed=10 + n) for n in (3, 1, 4)]
    features = torch.cat([f for f, _ in images])
    order = torch.tensor([2, 0, 2, 1, 0, 2, 0, 2])  # the image of each box, in the call's order
    taken = [0, 0, 0]
    boxes, where = [], []
    for j in order.tolist():
        boxes.append(images[j][1][taken[j]])
        where.append((j, taken[j]))
        taken[j] += 1
    with torch.inference_mode():
        refs = [_stock(model, f, b) for f, b in images]
        prepared = prepare_image(model, features)
        sparse = model.prompt_encoder(points=None, boxes=torch.stack(boxes), masks=None)[0]
        logits, iou = decode_boxes(model, prepared, sparse, image_index=order)
        with pytest.raises(ValueError, match="image_index"):
            decode_boxes(model, prepared, sparse)
    for row, (j, k) in enumerate(where):
        ref_logits, ref_iou, _ = refs[j]
        assert (logits[row] - ref_logits[k]).abs().max().item() <= 1e-5 * ref_logits.abs().max().item()
        assert iou[row].item() == pytest.approx(ref_iou[k].item(), abs=1e-6)
    with pytest.raises(ValueError, match="image embeddings"):
        prepare_image(model, features[0])
