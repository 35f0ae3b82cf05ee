"""Reading the platform's dataset export from object storage, the LSJ transform and the mapper."""

import numpy as np
import pytest
import torch

from dreammask.shared import keys
from dreammask.shared.storage import LocalObjectStore
from dreammask.trainer.data.coco_panoptic import id2rgb, read_panoptic, rgb2id
from dreammask.trainer.data.mapper import PanopticDatasetMapper
from dreammask.trainer.data.synthetic import load_synthetic_dataset
from dreammask.trainer.data.toy import write_toy_dataset
from dreammask.trainer.data.transforms import LargeScaleJitter


@pytest.fixture
def store(tmp_path):
    return LocalObjectStore(tmp_path / "objects")


def test_rgb_id_roundtrip():
    ids = np.array([[0, 1, 255], [256, 65536 + 7, 256**3 - 1]])
    assert (rgb2id(id2rgb(ids)) == ids).all()


def test_synthetic_export_reads_into_dataset_dicts(store, tmp_path):
    write_toy_dataset(store, "ds-a", num_images=3, size=40, seed=1)
    dicts, meta = load_synthetic_dataset(store, "ds-a", tmp_path / "cache")
    assert meta.classes == ["sky", "grass", "cat", "awning"]
    assert meta.is_novel == [False, False, False, True]
    assert meta.isthing == [False, False, True, True]
    assert len(dicts) == 3 and all(d["is_synthetic"] for d in dicts)
    pan = store.get_json(keys.dataset_file("ds-a", keys.COCO_PANOPTIC))
    for d, ann in zip(dicts, pan["annotations"]):
        ids = read_panoptic(d["pan_seg_file_name"])
        assert ids.shape == (40, 40)
        # contiguous ids: dataset id 1..4 -> 0..3; areas match the pixels
        for s, raw in zip(d["segments_info"], ann["segments_info"]):
            assert s["category_id"] == raw["category_id"] - 1
            assert (ids == s["id"]).sum() == raw["area"]
    # A second read hits the cache and gives the same dicts.
    again, _ = load_synthetic_dataset(store, "ds-a", tmp_path / "cache")
    assert again == dicts


def test_missing_dataset_says_what_is_wrong(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest"):
        load_synthetic_dataset(store, "ds-none", tmp_path)


def test_mapper_builds_instances_from_the_id_map(store, tmp_path):
    write_toy_dataset(store, "ds-b", num_images=2, size=32, seed=2)
    dicts, _ = load_synthetic_dataset(store, "ds-b", tmp_path / "cache")
    mapper = PanopticDatasetMapper(is_train=True)
    out = mapper(dicts[0], seed=0)
    ids = read_panoptic(dicts[0]["pan_seg_file_name"])
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 32, 32)
    assert out["is_synthetic"] is True
    inst = out["instances"]
    assert inst["gt_masks"].dtype == torch.bool and inst["gt_masks"].shape[1:] == (32, 32)
    assert inst["gt_classes"].tolist() == [s["category_id"] for s in dicts[0]["segments_info"]]
    for s, m in zip(dicts[0]["segments_info"], inst["gt_masks"]):
        assert (m.numpy() == (ids == s["id"])).all()
    # masks of a panoptic map never overlap and cover every labeled pixel
    assert int(inst["gt_masks"].sum(0).max()) == 1
    ev = PanopticDatasetMapper(is_train=False)(dicts[0])
    assert ev["sem_seg"].shape == (32, 32) and ev["pan_seg"][0].shape == (32, 32)


def test_lsj_scales_crops_pads_and_keeps_ids_aligned():
    h, w = 60, 40
    image = np.zeros((h, w, 3), np.uint8)
    ids = np.zeros((h, w), np.int64)
    ids[10:30, 5:25] = 7
    image[ids == 7] = 200
    lsj = LargeScaleJitter(size=32, min_scale=0.3, max_scale=2.0, random_flip=True)
    sizes = set()
    for seed in range(20):
        img, out_ids, valid = lsj(image, ids, np.random.default_rng(seed))
        assert img.shape == (32, 32, 3) and out_ids.shape == (32, 32)
        # the padding is void with the pad colour, the object keeps its colour under its id
        assert (out_ids[~valid] == 0).all() and (img[~valid] == 128).all()
        obj, bright = out_ids == 7, img[..., 0] >= 150
        if obj.sum() >= 36:  # image and ids moved together: the bright pixels are the object's
            assert (obj & bright).sum() / (obj | bright).sum() > 0.5
        sizes.add(int(valid.sum()))
    assert len(sizes) > 5  # the scale really varies
    a = lsj(image, ids, np.random.default_rng(3))
    b = lsj(image, ids, np.random.default_rng(3))
    assert all((x == y).all() for x, y in zip(a, b))


def test_file_names_relative_to_the_dataset_root_as_curation_writes_them(store, tmp_path):
    write_toy_dataset(store, "ds-f", num_images=2, size=32, seed=4)
    key = keys.dataset_file("ds-f", keys.COCO_PANOPTIC)
    pan = store.get_json(key)
    for im in pan["images"]:
        im["file_name"] = f"images/{im['file_name']}"
    for ann in pan["annotations"]:
        ann["file_name"] = f"panoptic/{ann['file_name']}"
    store.put_json(key, pan)
    dicts, _ = load_synthetic_dataset(store, "ds-f", tmp_path / "cache")
    for d in dicts:
        assert d["file_name"].endswith(f"ds-f/images/s0000{d['image_id'] - 1}.png")
        assert read_panoptic(d["pan_seg_file_name"]).shape == (32, 32)
