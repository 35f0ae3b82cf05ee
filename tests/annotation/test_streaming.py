"""SAM and CLIP as one stream: masks chunk by chunk, windows cleaned in the host pool, crops cut on the
device, scores of chunk k queued while chunk k + 1 encodes; the same annotations as the backends called
one after the other. The GPU's transfers (pinned buffers, events, side stream) cannot run here; the same
code runs with its CPU stand-ins, and the crops cut "on the device" run on the CPU device."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from test_clip_backend import _scene
from test_sam_backend import _image

from dreammask.services.annotation.backends import clip_crops, sam_decoder
from dreammask.services.annotation.backends.clip import (
    ClipScores,
    device_crops,
    device_crops_many,
    instance_crops,
)
from dreammask.services.annotation.backends.sam import SamMasks
from dreammask.services.annotation.device_io import InlineExecutor, StepTimer, host_pool
from dreammask.services.annotation.mask_ops import MaskWindow
from dreammask.services.annotation.pipeline import AnnotationPipeline
from dreammask.shared.schemas import LayoutObject, SceneLayout
from dreammask.shared.settings import Settings

VOCAB = ["awning", "road", "building", "sky", "person"]


@pytest.fixture
def backends(annotation_env, monkeypatch):
    made = []

    def make(**env):
        for k, v in env.items():
            monkeypatch.setenv(f"DREAMMASK_{k.upper()}", str(v))
        sam, clip = SamMasks.from_settings(Settings()), ClipScores.from_settings(Settings())
        made.extend([sam, clip])
        return sam, clip

    yield make
    for b in made:
        b.close()


def _task(n=5, seed=0):
    images, layouts = [], []
    boxes = [(0.1, 0.2, 0.5, 0.7), (0.0, 0.6, 1.0, 1.0), (0.5, 0.1, 0.9, 0.5), (0.0, 0.0, 1.0, 1.0)]
    for i in range(n):
        images.append(_image(h=96 + 8 * (i % 2), w=120, seed=seed + i))
        objects = [LayoutObject(category=c, box=list(b)) for c, b in zip(VOCAB, boxes[: 1 + i % 4], strict=False)]
        layouts.append(SceneLayout(job_id="j", scene_id=f"s{i:05d}", scene_index=i, novel_category="awning",
                                   caption="", objects=objects, seed=i, backend="test"))
    return images, layouts


def _one_after_the_other(sam, clip, images, layouts):
    pipe = AnnotationPipeline(sam, clip)
    pipe.streams = lambda: False  # segment_many, then score_many, then RLE
    return pipe.annotate_many(images, layouts, VOCAB)


def _assert_same(a_task, b_task, score_tol):
    assert [len(x) for x in a_task] == [len(x) for x in b_task]
    for a_scene, b_scene in zip(a_task, b_task, strict=True):
        for a, b in zip(a_scene, b_scene, strict=True):
            assert a.mask == b.mask and a.area == b.area and a.bbox == b.bbox
            assert a.scores.keys() == b.scores.keys()
            for k in a.scores:
                assert a.scores[k] == pytest.approx(b.scores[k], abs=score_tol), k


@pytest.mark.parametrize("env,tol", [
    ({}, 1e-6),  # the CPU defaults: inline host work, OpenCV crops
    ({"annotation_host_threads": 3, "sam_encoder_batch_size": 2}, 1e-6),  # a real pool, three chunks
    ({"clip_crops": "device", "sam_encoder_batch_size": 2}, 2e-3),  # crops cut from the uploaded image
])
def test_the_stream_gives_what_the_backends_give_one_after_the_other(backends, env, tol):
    sam, clip = backends(**env)
    images, layouts = _task()
    reference = _one_after_the_other(sam, clip, images, layouts)
    pipe = AnnotationPipeline(sam, clip)
    assert pipe.streams()
    streamed = pipe.annotate_many(images, layouts, VOCAB)
    _assert_same(reference, streamed, tol)
    t = pipe.last_timings
    assert t["device_s"]["encoder"] > 0 and t["device_s"]["decoder"] > 0 and t["device_s"]["clip"] > 0
    assert t["host_s"]["cleanup"] > 0 and t["host_s"]["rle"] > 0
    assert 0 < t["device_busy_s"] <= t["wall_s"] and t["device_idle_s"] >= 0
    assert sam.last_timings["encoder_s"] == t["device_s"]["encoder"] and clip.last_timings["encoder_s"] > 0


def test_chunk_k_is_scored_after_chunk_k_plus_1_is_queued(backends):
    """The stream hands chunk k over once the encoder of chunk k + 1 is queued: CLIP's work on chunk k
    then overlaps the next encoder on a GPU."""
    sam, clip = backends(sam_encoder_batch_size=1)
    images, layouts = _task(4)
    events = []
    sam.model.image_encoder.register_forward_pre_hook(lambda m, a: events.append("encode"))
    encode_image = clip.model.encode_image
    clip.model.encode_image = lambda x: events.append("clip") or encode_image(x)
    AnnotationPipeline(sam, clip).annotate_many(images, layouts, VOCAB)
    assert events == ["encode", "encode", "clip", "encode", "clip", "encode", "clip", "clip"]  # one image a chunk


def test_no_device_to_host_copy_of_whole_masks(backends, monkeypatch):
    """On the CPU nothing is copied: the windows are read in place and the scores come back in one
    table; the timer counts that one copy."""
    sam, clip = backends()
    images, layouts = _task(3)
    pipe = AnnotationPipeline(sam, clip)
    pipe.annotate_many(images, layouts, VOCAB)
    # 1 + 2 + 3 instances, 5 float32 scores each
    assert pipe.last_timings["d2h_copies"] == 1 and pipe.last_timings["d2h_bytes"] == 6 * 5 * 4


def test_clip_views_one_crop_per_instance(backends):
    """`clip_views=masked`: one crop per instance, half the image-encoder work; its cosine is the
    masked crop's cosine of the two-view run."""
    sam, both = backends()
    _, masked = backends(clip_views="masked")
    img, masks, boxes = _scene(seed=3)
    targets = ["road", "awning", "person"]
    calls = []
    encode_image = masked.model.encode_image
    masked.model.encode_image = lambda x: calls.append(len(x)) or encode_image(x)
    one = masked.score(img, masks, boxes, targets, VOCAB)
    two = both.score(img, masks, boxes, targets, VOCAB)
    assert calls == [3]
    for a, b in zip(one, two, strict=True):
        assert set(a) == {"clip_cosine", "clip_prob", "clip_rank", "clip_cosine_mask"}
        assert a["clip_cosine"] == pytest.approx(b["clip_cosine_mask"], abs=1e-5)
        assert a["clip_cosine_mask"] == pytest.approx(b["clip_cosine_mask"], abs=1e-5)
    _, box = backends(clip_views="box")
    for a, b in zip(box.score(img, masks, boxes, targets, VOCAB), two, strict=True):
        assert "clip_cosine_mask" not in a and a["clip_cosine"] == pytest.approx(b["clip_cosine_box"], abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_device_crops_match_the_host_crops(seed):
    """The crops cut on the device (resize weights as matrices) against OpenCV's on the host: regions
    inside the image, running off it, larger and smaller than the crop, empty and image-sized masks.
    OpenCV's fixed-point cubic weights make rare pixels differ by one level."""
    rng = np.random.default_rng(seed)
    h, w = 300, 360
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks, boxes = [], []
    for _ in range(12):
        x0, y0 = rng.uniform(-20, w - 10), rng.uniform(-20, h - 10)
        bw, bh = rng.uniform(3, 300, 2)
        m = np.zeros((h, w), bool)
        ys, xs = slice(max(int(y0), 0), int(y0 + bh)), slice(max(int(x0), 0), int(x0 + bw))
        m[ys, xs] = rng.random(m[ys, xs].shape) > 0.4
        masks.append(m)
        boxes.append([x0, y0, x0 + bw, y0 + bh])
    masks += [np.zeros((h, w), bool), np.ones((h, w), bool)]
    boxes += [[10.0, 10.0, 40.0, 90.0], [0.0, 0.0, float(w), float(h)]]
    mean = np.array([123, 117, 104])
    for size in (32, 224):
        host_box, host_masked = instance_crops(img, masks, np.array(boxes), size, 0.1, mean)
        dev = device_crops(torch.from_numpy(img), [MaskWindow.from_mask(m) for m in masks], np.array(boxes), size,
                           0.1, mean)
        for host, got in ((host_masked, dev[0]), (host_box, dev[1])):
            diff = np.abs(host.astype(np.float32) - got.permute(0, 2, 3, 1).numpy())
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def _random_instances(rng, h, w, n, sides=(3, 300)):
    masks, boxes = [], []
    for _ in range(n):
        x0, y0 = rng.uniform(-20, w - 10), rng.uniform(-20, h - 10)
        bw, bh = rng.uniform(*sides, 2)
        m = np.zeros((h, w), bool)
        ys, xs = slice(max(int(y0), 0), int(y0 + bh)), slice(max(int(x0), 0), int(x0 + bw))
        m[ys, xs] = rng.random(m[ys, xs].shape) > 0.4
        masks.append(m)
        boxes.append([x0, y0, x0 + bw, y0 + bh])
    return masks, np.array(boxes)


def _assert_close_crops(want: np.ndarray, got: torch.Tensor):
    diff = np.abs(want.astype(np.float32) - got.permute(0, 2, 3, 1).numpy())
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("batch_bytes", [clip_crops.CROP_BATCH_BYTES, 1])
def test_device_crops_of_several_images_in_batches(monkeypatch, batch_bytes):
    """One call for the instances of several images of two sizes, cut in batches (by image size, resize
    kind and memory; `1`: a batch per instance) gives each image's host crops, in order."""
    monkeypatch.setattr(clip_crops, "CROP_BATCH_BYTES", batch_bytes)
    rng = np.random.default_rng(5)
    items, host = [], {"masked": [], "box": []}
    mean = np.array([123, 117, 104])
    for h, w, n in ((300, 360, 9), (200, 150, 4), (300, 360, 7)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        masks, boxes = _random_instances(rng, h, w, n)
        items.append((torch.from_numpy(img), [MaskWindow.from_mask(m) for m in masks], boxes))
        box, masked = instance_crops(img, masks, boxes, 48, 0.1, mean)
        host["box"].append(box)
        host["masked"].append(masked)
    got = device_crops_many(items, 48, 0.1, mean)
    assert got.shape == (2, 20, 3, 48, 48)
    _assert_close_crops(np.concatenate(host["masked"]), got[0])
    _assert_close_crops(np.concatenate(host["box"]), got[1])
    only_box = device_crops_many(items, 48, 0.1, mean, views=("box",))
    assert torch.equal(only_box[0], got[1])


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def test_device_crops_launch_as_many_ops_for_many_instances_as_for_few():
    """On a GPU each op is a kernel launch, and launching cost more than the crops' arithmetic when they
    were cut one instance at a time: a batch of 48 instances now takes the ops a batch of 3 takes."""
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    counts = []
    for n in (3, 48):
        masks, boxes = _random_instances(rng, 256, 256, n, sides=(60, 120))  # all shrunk to 32 px
        wins = [MaskWindow.from_mask(m) for m in masks]
        with _CountOps() as counter:
            device_crops(torch.from_numpy(img), wins, boxes, 32, 0.1, np.array([123, 117, 104]))
        counts.append(counter.ops)
    assert counts[0] == counts[1] and counts[0] < 150, counts


def test_scores_from_device_crops_within_tolerance_of_host_crops(backends):
    _, host = backends(clip_crops="host")
    _, dev = backends(clip_crops="device")
    for seed in range(3):
        img, masks, boxes = _scene(seed=seed)
        targets = ["road", "awning", "person"]
        for a, b in zip(host.score(img, masks, boxes, targets, VOCAB), dev.score(img, masks, boxes, targets, VOCAB),
                        strict=True):
            for k in a:
                assert a[k] == pytest.approx(b[k], abs=2e-3), k


def _box_blobs(seen: list):
    """A `mask_hook` that fills each box and records the shape of the masks of each call."""

    def blobs(masks, boxes):
        seen.append(tuple(masks.shape))
        out = torch.zeros_like(masks)
        for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
            out[i, y0:y1, x0:x1] = True
        return out

    return blobs


def test_mask_hook_replaces_the_decoder_masks(backends):
    sam, clip = backends()
    seen = []
    sam.mask_hook = _box_blobs(seen)
    img = _image(seed=4)
    boxes = np.array([[10, 12, 50, 60], [60, 5, 110, 40]], float)
    results = sam.segment(img, boxes)
    assert seen == [(2, 96, 120)]
    for r, (x0, y0, x1, y1) in zip(results, boxes.astype(int), strict=True):
        want = np.zeros(img.shape[:2], bool)
        want[y0:y1, x0:x1] = True
        assert np.array_equal(r.mask, want) and r.window.area() == want.sum()


def test_host_pool_and_timer_on_the_cpu():
    assert isinstance(host_pool(-1, "cpu"), InlineExecutor)
    pool = host_pool(2, "cpu")
    assert pool.submit(lambda x: x + 1, 1).result() == 2
    pool.shutdown()
    failing = InlineExecutor().submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result()
    timer = StepTimer("cpu")
    with timer.device_step("a"):
        sum(range(1000))
    with timer.device_step("a"):
        pass
    timer.add_host("h", 0.5)
    timer.count("d2h_bytes", 10)
    s = timer.summary()
    assert s["device_s"]["a"] > 0 and s["host_s"]["h"] == 0.5 and s["d2h_bytes"] == 10
    assert s["device_busy_s"] == pytest.approx(s["device_s"]["a"], abs=1e-6) and s["device_idle_s"] >= 0


def test_decoder_takes_the_boxes_of_a_chunks_images_together(backends, monkeypatch):
    """A GPU decodes the boxes of all the images of an encoder chunk in one decoder call (images of two
    sizes here, upscaled by size): the same annotations as decoding image by image, as the CPU does."""
    sam, clip = backends(sam_encoder_batch_size=4)
    assert not sam.decodes_across_images  # the CPU's default
    calls = []
    decode = sam_decoder.decode_boxes
    monkeypatch.setattr(sam_decoder, "decode_boxes", lambda *a, **k: calls.append(len(a[2])) or decode(*a, **k))
    images, layouts = _task()
    pipe = AnnotationPipeline(sam, clip)
    one_by_one = pipe.annotate_many(images, layouts, VOCAB)
    assert calls == [1, 2, 3, 4, 1]
    calls.clear()
    sam.batch_images_in_decoder = True
    together = pipe.annotate_many(images, layouts, VOCAB)
    assert calls == [10, 1]  # chunks of 4 images and of 1
    _assert_same(one_by_one, together, 1e-5)


def test_mask_hook_sees_each_image_when_images_are_decoded_together(backends):
    sam, _ = backends(sam_encoder_batch_size=4)
    sam.batch_images_in_decoder = True
    seen = []
    sam.mask_hook = _box_blobs(seen)
    images = [_image(seed=1), _image(h=128, w=100, seed=2)]
    boxes = [np.array([[10, 12, 50, 60], [60, 5, 110, 40]], float), np.array([[0, 0, 30, 30]], float)]
    results = sam.segment_many(images, boxes)
    assert sorted(seen) == [(1, 128, 100), (2, 96, 120)]
    for image_results, image_boxes, image in zip(results, boxes, images, strict=True):
        for r, (x0, y0, x1, y1) in zip(image_results, image_boxes.astype(int), strict=True):
            want = np.zeros(image.shape[:2], bool)
            want[y0:y1, x0:x1] = True
            assert np.array_equal(r.mask, want)


@pytest.mark.parametrize("env", [
    {"sam_encoder_batch_size": 2},  # the CPU's defaults, three chunks
    # a GPU worker's configuration run on the CPU: a host pool, crops cut "on the device", one decoder
    # call per chunk
    {"sam_encoder_batch_size": 2, "annotation_host_threads": 2, "clip_crops": "device", "batch_images_in_decoder": 1},
])
def test_two_tasks_in_flight_give_what_each_gives_alone(backends, env):
    """A worker with two tasks in flight (Celery's threads pool, docs/annotation.md) shares its backends
    between them: task B's encoder starts while task A is still being scored, and each task's annotations
    are those it gets alone."""
    decoder_flag = env.pop("batch_images_in_decoder", None)
    sam, clip = backends(**env)
    sam.batch_images_in_decoder = None if decoder_flag is None else bool(decoder_flag)
    tasks = {"a": _task(5, seed=0), "b": _task(4, seed=50)}
    alone = {name: AnnotationPipeline(sam, clip).annotate_many(*task, VOCAB) for name, task in tasks.items()}

    b_encoding = threading.Event()
    waited: list[bool] = []
    encode_image = clip.model.encode_image

    def scoring(x):
        # task A's first chunk is not scored until task B's encoder has run: a stream that held the
        # backend from its first chunk to its last would keep B out, and this wait would time out
        if threading.current_thread().name == "a" and not waited:
            waited.append(b_encoding.wait(timeout=60))
        return encode_image(x)

    clip.model.encode_image = scoring
    sam.model.image_encoder.register_forward_pre_hook(
        lambda m, a: b_encoding.set() if threading.current_thread().name == "b" else None)
    together, errors = {}, []

    def run(name):
        try:
            together[name] = AnnotationPipeline(sam, clip).annotate_many(*tasks[name], VOCAB)
        except BaseException as e:  # noqa: BLE001 - reported by the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(name,), name=name) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and waited == [True]
    for name in tasks:
        _assert_same(alone[name], together[name], 1e-6)


def test_the_next_tasks_images_do_not_queue_behind_the_clean_up(backends):
    """With tasks in flight the host pool may hold a backlog of the task before's clean-up; the next task's
    images are resized by threads of their own, so its encoder starts while that backlog is still there."""
    sam, _ = backends(annotation_host_threads=1)
    release, encoding = threading.Event(), threading.Event()
    backlog = sam.pool.submit(release.wait, 60)  # the pool's one thread busy with earlier clean-up
    sam.model.image_encoder.register_forward_pre_hook(lambda m, a: encoding.set())
    task = threading.Thread(target=sam.segment_many, args=([_image(seed=3)], [np.array([[10, 12, 50, 60]], float)]))
    task.start()
    try:
        assert encoding.wait(timeout=60), "the encoder waited for the clean-up backlog"
    finally:
        release.set()
        task.join(timeout=60)
    assert backlog.result() is True and not task.is_alive()
