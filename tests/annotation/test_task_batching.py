"""A task's scenes annotated together: SAM encodes the images in batches and decodes each image's boxes
on its own embedding, giving what one image at a time gives; the decoder's box chunk follows the device;
CLIP scores the crops of all images together with a single device-to-host transfer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_clip_backend import _scene
from test_sam_backend import BOXES, _image

from dreammask.services.annotation.backends.clip import ClipScores
from dreammask.services.annotation.backends.sam import SamMasks
from dreammask.services.annotation.pipeline import AnnotationPipeline
from dreammask.shared.schemas import LayoutObject, SceneLayout
from dreammask.shared.settings import Settings


@pytest.fixture
def sam(annotation_env):
    backend = SamMasks.from_settings(Settings())
    yield backend
    backend.close()


@pytest.fixture
def clip(annotation_env):
    backend = ClipScores.from_settings(Settings())
    yield backend
    backend.close()


def test_decoder_chunk_is_chosen_by_device(sam, monkeypatch):
    assert sam.device.type == "cpu" and sam.decoder_batch_size == 0  # automatic
    assert sam.decoder_chunk(256 * 64 * 64) == 1  # a standard SAM's embedding: one box per call on the CPU
    assert sam.decoder_chunk() >= 64  # the tiny model's embedding is small: all boxes at once
    sam.device = torch.device("cuda")  # (only the rule is asked; nothing runs)
    assert sam.decoder_chunk(256 * 64 * 64) >= 64
    sam.device = torch.device("cpu")
    monkeypatch.setenv("DREAMMASK_SAM_DECODER_BATCH_SIZE", "16")
    explicit = SamMasks.from_settings(Settings())
    assert explicit.decoder_chunk(256 * 64 * 64) == 16
    explicit.close()


def test_images_encoded_in_batches_give_the_per_image_masks(sam):
    images = [_image(seed=s) for s in range(3)] + [_image(h=64, w=150, seed=9)]  # one of another shape
    boxes = [BOXES, BOXES[:2], np.zeros((0, 4)), BOXES[2:] * [1.2, 0.6, 1.2, 0.6]]
    alone = [sam.segment(img, b) if len(b) else [] for img, b in zip(images, boxes, strict=True)]
    calls = []
    hook = sam.model.image_encoder.register_forward_pre_hook(lambda m, args: calls.append(len(args[0])))
    sam.encoder_batch_size = 2
    together = sam.segment_many(images, boxes)
    hook.remove()
    assert calls == [2, 1]  # 3 images with boxes, 2 per call; the image without boxes is not encoded
    assert [len(r) for r in together] == [5, 2, 0, 3]
    for a_img, b_img in zip(alone, together, strict=True):
        for a, b in zip(a_img, b_img, strict=True):
            assert (a.mask != b.mask).mean() < 1e-3
            assert a.scores["pred_iou"] == pytest.approx(b.scores["pred_iou"], abs=1e-4)


def test_clip_scores_all_images_together_with_one_host_transfer(clip, monkeypatch):
    vocabulary = ["awning", "stairway", "teapot", "building", "road"]
    scenes = [_scene(seed=s) for s in range(3)]
    targets = [["awning", "teapot", "road"], ["road", "road", "building"], ["stairway", "kite", "awning"]]
    alone = [clip.score(img, m, b, t, vocabulary) for (img, m, b), t in zip(scenes, targets, strict=True)]

    encoded, transfers = [], []
    encode = clip.model.encode_image
    monkeypatch.setattr(clip.model, "encode_image", lambda x: encoded.append(len(x)) or encode(x))
    for name in ("cpu", "item", "tolist", "numpy", "__float__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _o=original, _n=name, **k: transfers.append(_n) or _o(self, *a, **k))
    items = [(img, m, b, t) for (img, m, b), t in zip(scenes, targets, strict=True)]
    together = clip.score_many(items, vocabulary)
    monkeypatch.undo()
    assert encoded == [18]  # 9 instances x (masked crop, box crop), one encoder call
    assert transfers == ["cpu", "tolist"]  # the score table, copied once
    for a_img, b_img in zip(alone, together, strict=True):
        for a, b in zip(a_img, b_img, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                assert a[k] == pytest.approx(b[k], abs=1e-5), k


def test_the_pipeline_annotates_a_task_as_scene_by_scene(sam, clip):
    vocabulary = ["awning", "building", "road"]
    layouts, images = [], []
    for i in range(3):
        images.append(_image(seed=i))
        layouts.append(SceneLayout(
            job_id="j", scene_id=f"s{i:05d}", scene_index=i, novel_category="awning", caption="",
            objects=[LayoutObject(category="awning", box=[0.1, 0.2, 0.5, 0.7], is_novel=True),
                     LayoutObject(category="road", box=[0.0, 0.6, 1.0, 1.0])][: 2 - (i == 1)],
            seed=i, backend="test"))
    pipe = AnnotationPipeline(sam, clip)
    together = pipe.annotate_many(images, layouts, vocabulary)
    one_by_one = [pipe(img, lay, vocabulary) for img, lay in zip(images, layouts, strict=True)]
    assert [len(x) for x in together] == [2, 1, 2]
    for a_scene, b_scene in zip(one_by_one, together, strict=True):
        for a, b in zip(a_scene, b_scene, strict=True):
            assert a.category == b.category and abs(a.area - b.area) <= max(5, a.area // 100)
            assert a.scores["clip_cosine"] == pytest.approx(b.scores["clip_cosine"], abs=1e-3)
