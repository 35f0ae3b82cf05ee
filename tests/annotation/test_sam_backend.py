"""The SAM mask backend on a tiny randomly initialised SAM, loaded from disk through the production loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dreammask.services.annotation.backends.sam import (
    STANDARD_ARCHITECTURES,
    TINY_ARCHITECTURE,
    SamArchitecture,
    SamMasks,
    build_sam,
    save_tiny_sam,
)
from dreammask.services.annotation.settings import AnnotationSettings
from dreammask.shared.backends import MaskResult
from dreammask.shared.registry import backend_class
from dreammask.shared.settings import Settings


@pytest.fixture
def sam(annotation_env):
    backend = SamMasks.from_settings(Settings())
    backend.warmup()
    yield backend
    backend.close()


def _image(h=96, w=120, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[...] = rng.integers(0, 255, 3)
    img[20:70, 15:60] = rng.integers(0, 255, 3)  # a "thing" on a plain background
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    return img


BOXES = np.array([[15, 20, 60, 70], [30, 20, 110, 90], [0, 0, 120, 96], [60, 5, 70, 15], [5, 50, 40, 95]], float)


def test_registered_and_loaded_from_checkpoint(sam, tiny_models_dir):
    assert backend_class("masks", "sam") is SamMasks
    saved = torch.load(tiny_models_dir / "sam" / "sam_tiny.pth", weights_only=True)
    loaded = sam.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k].cpu()) for k in saved)
    info = sam.describe()
    assert info["backend"] == "sam" and info["model_type"] == "custom" and info["dtype"] == "float32"
    assert sam.ready()


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_standard_architectures_match_segment_anything(model_type):
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # shapes only: no memory for the real sizes
        ours = build_sam(STANDARD_ARCHITECTURES[model_type]).state_dict()
        ref = sam_model_registry[model_type]().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}


def test_one_mask_per_box_with_scores(sam):
    img = _image()
    results = sam.segment(img, BOXES)
    assert len(results) == len(BOXES)
    for r in results:
        assert isinstance(r, MaskResult)
        assert r.mask.dtype == bool and r.mask.shape == img.shape[:2]
        assert set(r.scores) == {"pred_iou", "stability"}
        assert 0.0 <= r.scores["stability"] <= 1.0 and np.isfinite(r.scores["pred_iou"])
    # each box prompts its own mask
    assert len({r.mask.tobytes() for r in results}) > 1
    assert sam.last_timings["encoder_s"] > 0 and sam.last_timings["decoder_s"] > 0


def test_batched_decoding_equals_one_box_at_a_time(sam):
    img = _image(seed=3)
    batched = sam.segment(img, BOXES)
    sam.decoder_batch_size = 1
    single = sam.segment(img, BOXES)
    for a, b in zip(batched, single, strict=True):
        assert np.array_equal(a.mask, b.mask)
        assert a.scores["pred_iou"] == pytest.approx(b.scores["pred_iou"], abs=1e-5)
        assert a.scores["stability"] == pytest.approx(b.scores["stability"], abs=1e-5)


def test_best_mask_by_predicted_iou_agrees_with_sam_predictor(sam):
    """segment-anything's own numpy `SamPredictor.predict`, box by box, picks the same mask."""
    from segment_anything import SamPredictor

    sam.min_region_area = sam.min_hole_area = 0  # compare raw masks
    img = _image(seed=5)
    ours = sam.segment(img, BOXES)
    predictor = SamPredictor(sam.model)
    predictor.set_image(img)
    for box, r in zip(BOXES, ours, strict=True):
        masks, scores, _ = predictor.predict(box=box, multimask_output=True)
        best = int(np.argmax(scores))
        assert r.scores["pred_iou"] == pytest.approx(float(scores[best]), abs=1e-4)
        assert (masks[best] != r.mask).mean() < 1e-3


@pytest.mark.parametrize("shape", [(96, 120), (128, 128), (200, 90)])
def test_same_masks_as_predict_torch(sam, shape):
    """Our decoder path upscales only the kept candidate; segment-anything's batched `predict_torch`
    upscales all three: the kept masks must be identical."""
    from segment_anything import SamPredictor

    sam.min_region_area = sam.min_hole_area = 0
    img = _image(*shape, seed=11)
    boxes = BOXES * [shape[1] / 120, shape[0] / 96, shape[1] / 120, shape[0] / 96]
    ours = sam.segment(img, boxes)
    predictor = SamPredictor(sam.model)
    predictor.set_image(img)
    with torch.no_grad():
        t = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float32), shape)
        masks, iou, _ = predictor.predict_torch(None, None, boxes=t, multimask_output=True)
    best = iou.argmax(1)
    for i, r in enumerate(ours):
        assert np.array_equal(r.mask, masks[i, best[i]].numpy())
        assert r.scores["pred_iou"] == pytest.approx(float(iou[i, best[i]]), abs=1e-6)


def test_configured_clean_up_is_applied_to_the_raw_masks(annotation_env, monkeypatch):
    from dreammask.services.annotation.mask_ops import clean_mask

    monkeypatch.setenv("DREAMMASK_MASK_MIN_REGION_AREA", "0")
    monkeypatch.setenv("DREAMMASK_MASK_MIN_HOLE_AREA", "0")
    raw = SamMasks.from_settings(Settings())
    monkeypatch.setenv("DREAMMASK_MASK_MIN_REGION_AREA", "300")
    monkeypatch.setenv("DREAMMASK_MASK_MIN_HOLE_AREA", "300")
    cleaned = SamMasks.from_settings(Settings())
    assert (cleaned.min_region_area, cleaned.min_hole_area) == (300, 300)
    img = _image(seed=7)
    for a, b in zip(raw.segment(img, BOXES), cleaned.segment(img, BOXES), strict=True):
        assert np.array_equal(b.mask, clean_mask(a.mask, 300, 300))
        assert b.scores == a.scores


def test_boxes_are_clipped_and_empty_input_is_fine(sam):
    img = _image()
    out = sam.segment(img, np.array([[-50, -10, 500, 400], [119.5, 95.5, 119.6, 95.6]]))
    assert len(out) == 2 and all(r.mask.shape == img.shape[:2] for r in out)
    assert sam.segment(img, np.zeros((0, 4))) == []
    # grayscale and RGBA are accepted
    assert len(sam.segment(img[:, :, 0], BOXES[:1])) == 1
    assert len(sam.segment(np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]), BOXES[:1])) == 1


@pytest.mark.parametrize(
    "image,boxes,match",
    [
        (np.zeros((32, 32, 3), np.float32), BOXES[:1], "uint8"),
        (np.zeros((32, 32, 2), np.uint8), BOXES[:1], "shape"),
        (np.zeros((32, 32, 3), np.uint8), np.array([1.0, 2.0, 3.0]), "\\(N, 4\\)"),
        (np.zeros((32, 32, 3), np.uint8), np.array([[0, 0, np.nan, 4]]), "NaN"),
        (np.zeros((32, 32, 3), np.uint8), np.array([[10, 10, 5, 20]]), "x1 >= x0"),
    ],
)
def test_bad_input_says_what_is_wrong(sam, image, boxes, match):
    with pytest.raises(ValueError, match=match):
        sam.segment(image, boxes)


def test_missing_checkpoint(annotation_env, monkeypatch):
    monkeypatch.setenv("DREAMMASK_SAM_CHECKPOINT", "sam/nope.pth")
    with pytest.raises(FileNotFoundError, match="DREAMMASK_SAM_CHECKPOINT"):
        SamMasks.from_settings(Settings())


def test_checkpoint_of_another_architecture_is_refused(tmp_path, tiny_models_dir):
    other = SamArchitecture.from_dict({**TINY_ARCHITECTURE.to_dict(), "encoder_embed_dim": 48})
    arch_file = tmp_path / "other.json"
    arch_file.write_text(json.dumps(other.to_dict()))
    settings = AnnotationSettings(sam_checkpoint=tiny_models_dir / "sam" / "sam_tiny.pth", sam_architecture=arch_file)
    with pytest.raises(ValueError, match="does not match"):
        SamMasks.load(settings.sam_checkpoint, "vit_b", settings.sam_architecture)


def test_corrupt_checkpoint_and_bad_architecture(tmp_path):
    ckpt = save_tiny_sam(tmp_path)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read SAM checkpoint"):
        SamMasks.load(ckpt)
    with pytest.raises(ValueError, match="unknown SAM architecture keys"):
        SamArchitecture.from_dict({**TINY_ARCHITECTURE.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SamArchitecture.from_dict({**TINY_ARCHITECTURE.to_dict(), "image_size": 100})


def test_close_releases_the_model(annotation_env):
    backend = SamMasks.from_settings(Settings())
    backend.close()
    assert not backend.ready()
    with pytest.raises(RuntimeError, match="closed"):
        backend.segment(_image(), BOXES)


def test_half_precision_path_agrees_with_fp32(tiny_models_dir):
    """The fp16 path of a GPU worker (half weights, autocast), run on the CPU: same dtype plumbing."""
    from dreammask.services.annotation.backends.sam import load_sam

    model, arch = load_sam(tiny_models_dir / "sam" / "sam_tiny.pth")
    fp32 = SamMasks(model, arch=arch)
    model16, _ = load_sam(tiny_models_dir / "sam" / "sam_tiny.pth")
    fp16 = SamMasks(model16, arch=arch, dtype=torch.float16)
    assert next(fp16.model.parameters()).dtype == torch.float16
    img = _image(seed=13)
    for a, b in zip(fp32.segment(img, BOXES), fp16.segment(img, BOXES), strict=True):
        assert (a.mask == b.mask).mean() > 0.98
        assert a.scores["pred_iou"] == pytest.approx(b.scores["pred_iou"], abs=0.01)


def _encoder_with_relative_positions(seed=0):
    torch.manual_seed(seed)
    model = build_sam(TINY_ARCHITECTURE).eval()
    with torch.no_grad():  # zero-initialised in a fresh model; trained ones are not
        for name, p in model.image_encoder.named_parameters():
            if "rel_pos" in name:
                p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 0.1)])
def test_sdpa_attention_computes_the_stock_encoder(dtype, tol):
    from segment_anything.modeling.image_encoder import Attention

    from dreammask.services.annotation.backends.sam_attention import SdpaAttention, use_sdpa, use_stock

    model = _encoder_with_relative_positions().to(dtype)
    keys = model.state_dict().keys()
    x = torch.randn(3, 3, TINY_ARCHITECTURE.image_size, TINY_ARCHITECTURE.image_size, dtype=dtype)
    with torch.inference_mode():
        stock = model.image_encoder(x).float()
        assert use_sdpa(model.image_encoder) == TINY_ARCHITECTURE.encoder_depth
        assert all(type(m) is SdpaAttention for m in model.image_encoder.modules() if isinstance(m, Attention))
        fused = model.image_encoder(x).float()
        # images of a batch do not mix: the second image alone gives its row of the batch
        alone = model.image_encoder(x[1:2]).float()
    assert model.state_dict().keys() == keys  # checkpoints load unchanged
    assert (stock - fused).abs().max().item() <= tol * stock.abs().max().item()
    assert (fused[1:2] - alone).abs().max().item() <= tol * stock.abs().max().item()
    assert use_stock(model.image_encoder) == TINY_ARCHITECTURE.encoder_depth


def test_attention_is_a_setting(annotation_env, monkeypatch):
    from dreammask.services.annotation.backends.sam_attention import SdpaAttention

    default = SamMasks.from_settings(Settings())
    assert default.describe()["attention"] == "sdpa"
    assert any(type(m) is SdpaAttention for m in default.model.modules())
    monkeypatch.setenv("DREAMMASK_SAM_ATTENTION", "stock")
    stock = SamMasks.from_settings(Settings())
    assert stock.describe()["attention"] == "stock"
    assert not any(type(m) is SdpaAttention for m in stock.model.modules())
    img = _image(seed=17)
    for a, b in zip(default.segment(img, BOXES), stock.segment(img, BOXES), strict=True):
        assert (a.mask == b.mask).mean() > 0.999
        assert a.scores["pred_iou"] == pytest.approx(b.scores["pred_iou"], abs=1e-4)
    monkeypatch.setenv("DREAMMASK_SAM_ATTENTION", "flash")
    with pytest.raises(ValueError, match="sam_attention"):
        AnnotationSettings()
