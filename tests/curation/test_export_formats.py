"""The YOLO segmentation and Hugging Face `datasets` exports, loaded by those libraries' own code."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dreammask.shared import keys
from dreammask.shared.masks import decode_rle
from dreammask.shared.schemas import CuratedScene


@pytest.fixture()
def exported(curation, tmp_path):
    job = curation.job(8, preset="coco_panoptic")
    curation.run()
    src = curation.rt.settings.storage_root / keys.dataset_prefix(keys.dataset_id_for_job(job))
    dest = tmp_path / "download"
    shutil.copytree(src, dest)  # as a user would have it after `dreammask download`
    kept = [r for r in (curation.rt.store.get_model(keys.curated(job, keys.scene_id(i)), CuratedScene)
                        for i in range(8)) if r.kept]
    return dest, kept


def test_yolo_segmentation_loads_with_ultralytics(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo-config"))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    root, kept = exported
    data = check_det_dataset(str(root / keys.YOLO_DATA), autodownload=False)
    coco = json.loads((root / keys.COCO_INSTANCES).read_text())
    assert data["nc"] == len(coco["categories"]) and data["names"][0] == "person"
    ds = YOLODataset(img_path=data["train"], data=data, task="segment", imgsz=64, augment=False)
    assert len(ds.labels) == len(kept)
    by_scene = {r.scene_id: r for r in kept}
    names = data["names"]
    for lb in ds.labels:
        rec = by_scene[lb["im_file"].rsplit("/", 1)[1][:-4]]
        assert sorted(names[int(c)] for c in lb["cls"].ravel()) == sorted(i.category for i in rec.instances)
        # Each outline covers its mask: the polygon's area is close to the mask's.
        assert all(seg.shape[1] == 2 and len(seg) >= 3 for seg in lb["segments"])
        for inst in rec.instances:
            poly = np.array(inst.polygon).reshape(-1, 2) * [rec.width, rec.height]
            x, y = poly[:, 0], poly[:, 1]
            area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
            assert abs(area - inst.area) / inst.area < 0.15
    item = ds[0]
    assert item["img"].shape[0] == 3 and len(item["cls"]) >= 1


def test_hf_parquet_loads_with_datasets(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    root, kept = exported
    ds = datasets.load_dataset("parquet", data_files=str(root / keys.HF_DIR / "data" / "*.parquet"),
                               split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(ds.features["image"], datasets.Image)
    assert len(ds) == len(kept)
    row = ds[0]
    rec = next(r for r in kept if r.scene_id == row["scene_id"])
    assert row["image"].size == (rec.width, rec.height)
    objs = row["objects"]
    assert [o["category"] for o in objs] == [i.category for i in rec.instances]
    for o, inst in zip(objs, rec.instances):
        mask = decode_rle({"size": [row["height"], row["width"]], "counts": o["mask_counts"]})
        assert int(mask.sum()) == o["area"] == inst.area
        assert o["category_id"] == inst.category_id and o["isthing"] == bool(inst.isthing)
    # The folder alone is enough too: `datasets` finds the split from the shard names.
    again = datasets.load_dataset(str(root / keys.HF_DIR), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert again.num_rows == len(kept)
