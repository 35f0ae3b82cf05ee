"""The CLIP score backend on a tiny randomly initialised open_clip model, saved and loaded like a real one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dreammask.services.annotation.backends.clip import (
    CLIP_VOCAB_SIZE,
    TINY_MODEL_CONFIG,
    TINY_MODEL_NAME,
    ClipScores,
    instance_crops,
    load_clip,
)
from dreammask.shared.registry import backend_class
from dreammask.shared.settings import Settings

VOCAB = ["building", "road", "person", "awning", "stairway"]


@pytest.fixture
def clip(annotation_env):
    backend = ClipScores.from_settings(Settings())
    backend.warmup()
    yield backend
    backend.close()


def _scene(seed=0, h=80, w=100):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 40, 50], [30, 10, 95, 70], [60, 40, 90, 78]], float)
    masks = []
    for x0, y0, x1, y1 in boxes.astype(int):
        m = np.zeros((h, w), bool)
        m[y0 + 3 : y1 - 3, x0 + 2 : x1 - 2] = True
        masks.append(m)
    return img, masks, boxes


def test_registered_and_loaded_from_weights_file(clip, tiny_models_dir):
    assert backend_class("scores", "clip") is ClipScores
    saved = torch.load(tiny_models_dir / "clip" / f"{TINY_MODEL_NAME}.bin", weights_only=True)
    loaded = clip.model.state_dict()
    assert all(torch.equal(saved[k], loaded[k].cpu()) for k in saved)
    assert len(clip.tokenizer.encoder) == CLIP_VOCAB_SIZE == clip.model.vocab_size
    assert clip.describe()["model"] == TINY_MODEL_NAME and clip.ready()


def test_prompt_ensemble_and_cache(clip):
    names = ("awning", "wall-other-merged")
    emb = clip.text_embeddings(names)
    assert emb.shape == (2, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    # by hand: every template, encoded, unit-normed, averaged, unit-normed; COCO suffixes are cut
    for row, name in zip(emb, ("awning", "wall"), strict=True):
        with torch.no_grad():
            per = clip.model.encode_text(clip.tokenizer([t.format(name) for t in clip.templates]))
        ref = torch.nn.functional.normalize(torch.nn.functional.normalize(per, dim=-1).mean(0), dim=-1)
        assert torch.allclose(row, ref, atol=1e-5)
    assert clip.text_embeddings(names) is emb  # cached
    clip.text_cache_size = 2
    clip.text_embeddings(("a",))
    clip.text_embeddings(("b",))  # evicts the least recently used: `names`
    assert names not in clip._text_cache and ("b",) in clip._text_cache


def test_scores_are_consistent_over_the_vocabulary(clip):
    img, masks, boxes = _scene()
    m, b = masks[1], boxes[1]
    # the same instance scored against every name of the vocabulary
    out = clip.score(img, [m] * len(VOCAB), np.stack([b] * len(VOCAB)), VOCAB, VOCAB)
    probs = np.array([o["clip_prob"] for o in out])
    cosines = np.array([o["clip_cosine"] for o in out])
    ranks = [int(o["clip_rank"]) for o in out]
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert sorted(ranks) == list(range(1, len(VOCAB) + 1))
    assert ranks == list(1 + (-cosines).argsort().argsort())
    scale = float(clip.model.logit_scale.detach().exp())
    ref = np.exp(scale * cosines) / np.exp(scale * cosines).sum()
    assert np.allclose(probs, ref, atol=1e-5)


def test_batch_across_the_image_equals_one_instance_at_a_time(clip):
    img, masks, boxes = _scene(seed=1)
    targets = ["awning", "building", "person"]
    together = clip.score(img, masks, boxes, targets, VOCAB)
    for i in range(len(masks)):
        alone = clip.score(img, [masks[i]], boxes[i : i + 1], [targets[i]], VOCAB)[0]
        for key in together[i]:
            assert together[i][key] == pytest.approx(alone[key], abs=1e-5)


def test_mask_weight_selects_the_crop(annotation_env, monkeypatch):
    img, masks, boxes = _scene(seed=2)
    for weight, key in (("1.0", "clip_cosine_mask"), ("0.0", "clip_cosine_box")):
        monkeypatch.setenv("DREAMMASK_CLIP_MASK_WEIGHT", weight)
        backend = ClipScores.from_settings(Settings())
        for s in backend.score(img, masks, boxes, ["road"] * 3, VOCAB):
            assert s["clip_cosine"] == pytest.approx(s[key], abs=1e-5)
            assert s["clip_cosine_mask"] != pytest.approx(s["clip_cosine_box"], abs=1e-6)


def test_masked_crop_neutralises_the_background():
    img = np.full((40, 40, 3), 200, np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:20] = True  # left half of the box
    mean = np.array([123, 117, 104])
    box_crops, masked = instance_crops(img, [mask], np.array([[10.0, 10.0, 30.0, 30.0]]), 20, 0.0, mean)
    assert box_crops.shape == masked.shape == (1, 20, 20, 3)
    assert (box_crops[0] == 200).all()
    assert (masked[0, :, :9] == 200).all() and (masked[0, :, 11:] == mean).all()
    # a crop that runs off the image is padded with the mean colour, not stretched
    _, off = instance_crops(img, [mask], np.array([[0.0, 0.0, 10.0, 40.0]]), 20, 0.0, mean)
    assert (off[0, :, 0] == mean).all()


def _reference_crops(image, masks, boxes, size, margin, mean_rgb):
    """The crops as the module docstring defines them, written plainly (padded copies, np.where)."""
    import cv2

    from dreammask.services.annotation.backends.clip import _square_region

    fill = np.asarray(mean_rgb, dtype=np.uint8)
    h, w = image.shape[:2]
    out_box, out_masked = [], []
    for mask, box in zip(masks, boxes, strict=True):
        ys, xs = np.nonzero(mask)
        mask_box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if xs.size else None
        x0, y0, side = _square_region(box, mask_box, margin)
        crop = np.empty((side, side, 3), np.uint8)
        crop[...] = fill
        keep = np.zeros((side, side), bool)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
        if sx1 > sx0 and sy1 > sy0:
            crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
            keep[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = mask[sy0:sy1, sx0:sx1]
        masked = np.where(keep[:, :, None], crop, fill)
        interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
        out_box.append(cv2.resize(crop, (size, size), interpolation=interp))
        out_masked.append(cv2.resize(masked, (size, size), interpolation=interp))
    return np.stack(out_box), np.stack(out_masked)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crops_match_their_definition(seed):
    """Windows inside the image (read in place), running off it (padded), empty and image-sized masks,
    regions larger and smaller than the crop size."""
    rng = np.random.default_rng(seed)
    h, w = 300, 360
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks, boxes = [], []
    for _ in range(10):
        x0, y0 = rng.uniform(-20, w - 10), rng.uniform(-20, h - 10)
        bw, bh = rng.uniform(3, 200, 2)
        box = [x0, y0, x0 + bw, y0 + bh]
        m = np.zeros((h, w), bool)
        ys, xs = slice(max(int(y0), 0), int(y0 + bh)), slice(max(int(x0), 0), int(x0 + bw))
        m[ys, xs] = rng.random(m[ys, xs].shape) > 0.4
        masks.append(m)
        boxes.append(box)
    masks += [np.zeros((h, w), bool), np.ones((h, w), bool)]
    boxes += [[10.0, 10.0, 40.0, 90.0], [0.0, 0.0, float(w), float(h)]]
    mean = np.array([123, 117, 104])
    for size in (32, 224):
        got = instance_crops(img, masks, np.array(boxes), size, 0.1, mean)
        want = _reference_crops(img, masks, np.array(boxes), size, 0.1, mean)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_targets_outside_the_vocabulary_and_duplicates(clip):
    img, masks, boxes = _scene(seed=3)
    out = clip.score(img, masks[:2], boxes[:2], ["gazebo", "wall"], ["wall-other-merged", "wall", "road"])
    assert all(o["clip_rank"] <= 3 for o in out)  # vocabulary: wall, road, gazebo
    assert ("wall-other-merged", "road", "gazebo") in clip._text_cache


def test_empty_and_bad_input(clip):
    img, masks, boxes = _scene()
    assert clip.score(img, [], np.zeros((0, 4)), [], VOCAB) == []
    with pytest.raises(ValueError, match="one mask, box and target"):
        clip.score(img, masks, boxes, ["road"], VOCAB)
    with pytest.raises(ValueError, match="mask shape"):
        clip.score(img, [np.zeros((5, 5), bool)], boxes[:1], ["road"], VOCAB)
    with pytest.raises(ValueError, match="uint8 RGB"):
        clip.score(img.astype(np.float32), masks, boxes, ["road"] * 3, VOCAB)


def test_loader_errors_say_what_to_change(tiny_models_dir, tmp_path):
    clip_dir = tiny_models_dir / "clip"
    with pytest.raises(FileNotFoundError, match="DREAMMASK_CLIP_PRETRAINED"):
        load_clip(TINY_MODEL_NAME, clip_dir / "missing.bin", clip_dir / f"{TINY_MODEL_NAME}.json")
    renamed = tmp_path / "other-name.json"
    renamed.write_text((clip_dir / f"{TINY_MODEL_NAME}.json").read_text())
    with pytest.raises(ValueError, match="make them equal"):
        load_clip(TINY_MODEL_NAME, clip_dir / f"{TINY_MODEL_NAME}.bin", renamed)
    with pytest.raises(ValueError, match="hub downloads are off"):
        load_clip("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None)
    with pytest.raises(ValueError, match="unknown CLIP model config"):
        load_clip("No-Such-Model", clip_dir / f"{TINY_MODEL_NAME}.bin")
    # weights of another architecture
    other = tmp_path / "tiny-wider-clip.json"
    other.write_text(json.dumps({**TINY_MODEL_CONFIG, "embed_dim": 48}))
    with pytest.raises(ValueError, match="cannot load CLIP"):
        load_clip("tiny-wider-clip", clip_dir / f"{TINY_MODEL_NAME}.bin", other)


def test_close_releases_the_model(annotation_env):
    backend = ClipScores.from_settings(Settings())
    backend.close()
    assert not backend.ready()
    img, masks, boxes = _scene()
    with pytest.raises(RuntimeError, match="closed"):
        backend.score(img, masks, boxes, ["road"] * 3, VOCAB)


def test_half_precision_path_agrees_with_fp32(clip, tiny_models_dir):
    """open_clip's fp16 weights with autocast, as on a GPU worker, run on the CPU."""
    d = tiny_models_dir / "clip"
    model, tokenizer = load_clip(TINY_MODEL_NAME, d / f"{TINY_MODEL_NAME}.bin", d / f"{TINY_MODEL_NAME}.json",
                                 precision="fp16")
    half = ClipScores(model, tokenizer)
    assert half.dtype == torch.float16
    img, masks, boxes = _scene(seed=4)
    targets = ["road", "awning", "person"]
    for a, b in zip(clip.score(img, masks, boxes, targets, VOCAB), half.score(img, masks, boxes, targets, VOCAB),
                    strict=True):
        assert a["clip_cosine"] == pytest.approx(b["clip_cosine"], abs=5e-3)
        assert a["clip_prob"] == pytest.approx(b["clip_prob"], abs=5e-3)
