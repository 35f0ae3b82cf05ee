"""mIoU and PQ against cases computed by hand."""

import math

import numpy as np
import pytest
import torch

from dreammask.trainer.evaluation.panoptic import PanopticEvaluator, pq_from_stats, pq_image_stats
from dreammask.trainer.evaluation.sem_seg import SemSegEvaluator


def test_miou_by_hand():
    ev = SemSegEvaluator(["a", "b"])
    gt = torch.tensor([[0, 0, 1], [1, 255, 1]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 0]])
    ev.process_pair(gt, pred)
    r = ev.evaluate()
    # class a: TP 1, union 3; class b: TP 2, union 4; pixel (1,1) ignored
    assert r["IoU-a"] == pytest.approx(100 / 3)
    assert r["IoU-b"] == pytest.approx(50)
    assert r["mIoU"] == pytest.approx((100 / 3 + 50) / 2)
    assert r["pACC"] == pytest.approx(60)
    assert r["mACC"] == pytest.approx((50 + 200 / 3) / 2)
    assert r["fwIoU"] == pytest.approx((2 * 100 / 3 + 3 * 50) / 5)


def test_miou_absent_classes_and_novel_split():
    ev = SemSegEvaluator(["a", "b", "c", "d"], is_novel=[False, False, True, True], seen=[True, False, False, True])
    gt = torch.tensor([[0, 0, 2, 2]])
    pred = torch.tensor([[0, 3, 2, 2]])
    ev.process_pair(gt, pred)
    # a: 1/2, b: absent everywhere (left out), c: 2/2, d: predicted but absent from the ground truth:
    # left out as detectron2's SemSegEvaluator does (not an IoU of 0)
    r = ev.evaluate()
    assert math.isnan(r["IoU-b"])
    assert math.isnan(r["IoU-d"])
    assert r["mIoU"] == pytest.approx((50 + 100) / 2)
    assert r["mIoU_base"] == pytest.approx(50)
    assert r["mIoU_novel"] == pytest.approx(100)
    assert r["hIoU"] == pytest.approx(2 * 50 * 100 / 150)
    # FC-CLIP's seen/unseen split is its own: a seen (d absent), c unseen (b absent)
    assert r["mIoU_seen"] == pytest.approx(50) and r["mIoU_unseen"] == pytest.approx(100)
    assert "mIoU_seen" not in SemSegEvaluator(["a"]).evaluate()


def _detectron2_miou(gt, pred, num_classes, ignore=255):
    """detectron2's SemSegEvaluator arithmetic, written from its published evaluate(): conf[pred, gt] with an
    extra row/column for ignore, pos_gt = column sums, iou_valid = (pos_gt > 0) & (union > 0)."""
    gt = gt.copy()
    gt[gt == ignore] = num_classes
    conf = np.bincount((num_classes + 1) * pred.reshape(-1) + gt.reshape(-1),
                       minlength=(num_classes + 1) ** 2).reshape(num_classes + 1, num_classes + 1)
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = conf[:-1, :-1].sum(0).astype(float)
    pos_pred = conf[:-1, :-1].sum(1).astype(float)
    acc_valid = pos_gt > 0
    union = pos_gt + pos_pred - tp
    iou_valid = acc_valid & (union > 0)
    iou = np.full(num_classes, np.nan)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    return 100 * iou[iou_valid].mean(), 100 * np.sum(tp) / np.sum(pos_gt)


def test_miou_equals_detectron2_rule_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 7))
        gt = rng.integers(0, k, size=(9, 11))
        gt[rng.random(gt.shape) < 0.1] = 255
        gt[gt == k - 1] = 0  # the last class never occurs in the ground truth
        pred = rng.integers(0, k, size=(9, 11))
        ev = SemSegEvaluator([str(i) for i in range(k)])
        ev.process_pair(torch.from_numpy(gt), torch.from_numpy(pred))
        r = ev.evaluate()
        miou, pacc = _detectron2_miou(gt, pred, k)
        assert r["mIoU"] == pytest.approx(miou)
        assert r["pACC"] == pytest.approx(pacc)


def test_miou_from_scores_resized_to_ground_truth():
    ev = SemSegEvaluator(["a", "b"])
    scores = torch.zeros(2, 2, 2)
    scores[0, :, 0] = 1.0  # left half a, right half b, at 2x2
    scores[1, :, 1] = 1.0
    ev.process([{"sem_seg": torch.tensor([[0, 0, 1, 1]] * 4)}], [{"sem_seg": scores}])
    assert ev.evaluate()["mIoU"] == pytest.approx(100)


def _grid(rows):
    return np.array(rows, dtype=np.int64)


def test_pq_by_hand_things_and_stuff():
    gt = _grid([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 0, 0], [1, 1, 0, 0]])
    gt_segs = [{"id": 1, "category_id": 0, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0}]
    pred = _grid([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 2, 2]])
    pred_segs = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 0}]
    stats = pq_image_stats(gt, gt_segs, pred, pred_segs, 2)
    # thing: IoU 6/8 matched, the 2-pixel segment is a false positive
    assert stats[0].tolist() == [1, 1, 0, 0.75]
    # stuff: 4 of its 8 pixels fall on void, so the union is 4 and IoU is 1
    assert stats[1].tolist() == [1, 0, 0, 1.0]
    r = pq_from_stats(stats, isthing=[True, False], class_names=["cat", "grass"])
    assert r["PQ"] == pytest.approx(75)
    assert r["PQ_th"] == pytest.approx(50) and r["SQ_th"] == pytest.approx(75)
    assert r["RQ_th"] == pytest.approx(100 / 1.5)
    assert r["PQ_st"] == pytest.approx(100)
    assert r["PQ-cat"] == pytest.approx(50)


def test_pq_crowd_regions_and_the_half_iou_rule():
    gt = _grid([[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
    gt_segs = [{"id": 1, "category_id": 0, "iscrowd": 1}, {"id": 2, "category_id": 1, "iscrowd": 0}]
    pred = _grid([[5, 5, 5, 5], [5, 5, 5, 5], [5, 0, 0, 0], [6, 6, 6, 6]])
    pred_segs = [{"id": 5, "category_id": 0}, {"id": 6, "category_id": 1}]
    stats = pq_image_stats(gt, gt_segs, pred, pred_segs, 2)
    # 8 of segment 5's 9 pixels lie on a crowd region of its class: ignored, not a false positive
    assert stats[0].tolist() == [0, 0, 0, 0]
    # IoU exactly 0.5 is no match: one false negative and one false positive
    assert stats[1].tolist() == [0, 1, 1, 0]
    r = pq_from_stats(stats, isthing=[True, False])
    assert r["PQ"] == 0.0 and math.isnan(r["PQ_th"])


def test_panoptic_evaluator_accumulates_and_rejects_unlisted_ids():
    ev = PanopticEvaluator(["cat", "grass"], [True, False], is_novel=[True, False])
    gt = torch.tensor([[1, 1], [2, 2]])
    segs = [{"id": 1, "category_id": 0, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0}]
    out = {"panoptic_seg": (torch.tensor([[4, 4], [9, 9]]), [{"id": 4, "category_id": 0, "isthing": True, "score": 1.0},
                                                            {"id": 9, "category_id": 1, "isthing": False, "score": 1.0}])}
    ev.process([{"pan_seg": (gt, segs)}], [out])
    ev.process([{"pan_seg": (gt, segs)}], [out])
    r = ev.evaluate()
    assert r["PQ"] == 100 and r["PQ_novel"] == 100 and r["PQ_base"] == 100
    assert ev.stats[:, 0].tolist() == [2, 2]
    bad = {"panoptic_seg": (torch.tensor([[4, 4], [7, 7]]), out["panoptic_seg"][1])}
    with pytest.raises(ValueError, match="not in the segment list"):
        ev.process([{"pan_seg": (gt, segs)}], [bad])


def _panopticapi_pq(images, categories):
    """An independent transcription of panopticapi's pq_compute_single_core + PQStat.pq_average (COCO's
    reference, not installable from PyPI): per image a dict gt/pred segment maps; categories {id: isthing}.
    Returns {"All"|"Things"|"Stuff": (pq, sq, rq, n)} in percent."""
    from collections import defaultdict

    void, offset = 0, 256 * 256 * 256
    per_cat = defaultdict(lambda: [0.0, 0, 0, 0])  # iou, tp, fp, fn
    for gt_map, gt_list, pred_map, pred_list in images:
        gt_segms = {el["id"]: dict(el) for el in gt_list}
        pred_segms = {el["id"]: dict(el) for el in pred_list}
        labels, cnt = np.unique(gt_map, return_counts=True)
        for lab, c in zip(labels, cnt):
            if lab in gt_segms:
                gt_segms[lab]["area"] = int(c)  # what the COCO JSON's "area" holds
        labels, cnt = np.unique(pred_map, return_counts=True)
        for lab, c in zip(labels, cnt):
            if lab == void:
                continue
            pred_segms[lab]["area"] = int(c)
        joint = gt_map.astype(np.uint64) * offset + pred_map.astype(np.uint64)
        gt_pred = {}
        labels, cnt = np.unique(joint, return_counts=True)
        for lab, c in zip(labels, cnt):
            gt_pred[(int(lab // offset), int(lab % offset))] = int(c)
        gt_matched, pred_matched = set(), set()
        for (g, p), inter in gt_pred.items():
            if g not in gt_segms or p not in pred_segms:
                continue
            if gt_segms[g]["iscrowd"] == 1:
                continue
            if gt_segms[g]["category_id"] != pred_segms[p]["category_id"]:
                continue
            union = pred_segms[p]["area"] + gt_segms[g]["area"] - inter - gt_pred.get((void, p), 0)
            iou = inter / union
            if iou > 0.5:
                st = per_cat[gt_segms[g]["category_id"]]
                st[1] += 1
                st[0] += iou
                gt_matched.add(g)
                pred_matched.add(p)
        crowd = {}
        for g, info in gt_segms.items():
            if g in gt_matched:
                continue
            if info["iscrowd"] == 1:
                crowd[info["category_id"]] = g
                continue
            per_cat[info["category_id"]][3] += 1
        for p, info in pred_segms.items():
            if p in pred_matched:
                continue
            inter = gt_pred.get((void, p), 0)
            if info["category_id"] in crowd:
                inter += gt_pred.get((crowd[info["category_id"]], p), 0)
            if inter / info["area"] > 0.5:
                continue
            per_cat[info["category_id"]][2] += 1
    out = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        pq = sq = rq = 0.0
        n = 0
        for cat, cat_thing in categories.items():
            if isthing is not None and cat_thing != isthing:
                continue
            iou, tp, fp, fn = per_cat[cat]
            if tp + fp + fn == 0:
                continue
            n += 1
            pq += iou / (tp + 0.5 * fp + 0.5 * fn)
            sq += iou / tp if tp != 0 else 0
            rq += tp / (tp + 0.5 * fp + 0.5 * fn)
        out[name] = (100 * pq / n, 100 * sq / n, 100 * rq / n, n) if n else (float("nan"),) * 3 + (0,)
    return out


def _random_panoptic_image(rng, num_classes, isthing, size=(12, 14)):
    """Blocky ground truth (things, stuff, a crowd region, void) and a prediction that shifts, merges,
    mislabels and invents segments, so matches, near misses, unmatched segments and void overlaps occur."""
    h, w = size
    gt = np.zeros(size, dtype=np.int64)
    gt_segs, next_id = [], 1
    for _ in range(int(rng.integers(2, 6))):
        y0, x0 = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
        y1, x1 = y0 + int(rng.integers(2, 7)), x0 + int(rng.integers(2, 8))
        gt[y0:y1, x0:x1] = next_id
        c = int(rng.integers(0, num_classes))
        gt_segs.append({"id": next_id, "category_id": c, "iscrowd": int(isthing[c] and rng.random() < 0.25)})
        next_id += 1
    gt_segs = [s for s in gt_segs if (gt == s["id"]).any()]
    pred = np.zeros(size, dtype=np.int64)
    pred_segs = []
    for s in gt_segs:
        ys, xs = np.nonzero(gt == s["id"])
        dy, dx = int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
        pid = 100 + s["id"]
        pred[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] = pid
        c = s["category_id"] if rng.random() < 0.8 else int(rng.integers(0, num_classes))
        pred_segs.append({"id": pid, "category_id": c})
    if rng.random() < 0.7:  # an invented segment, partly on void
        y0, x0 = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
        pred[y0:y0 + 3, x0:x0 + 3] = 999
        pred_segs.append({"id": 999, "category_id": int(rng.integers(0, num_classes))})
    present = set(np.unique(pred).tolist())
    pred_segs = [s for s in pred_segs if s["id"] in present]
    return gt, gt_segs, pred, pred_segs


def test_pq_equals_panopticapi_on_built_cases():
    rng = np.random.default_rng(1)
    num_classes, isthing = 5, [True, True, True, False, False]
    images = [_random_panoptic_image(rng, num_classes, isthing) for _ in range(60)]
    ev = PanopticEvaluator([f"c{i}" for i in range(num_classes)], isthing)
    for gt, gs, pred, ps in images:
        ev.process([{"pan_seg": (torch.from_numpy(gt), gs)}], [{"panoptic_seg": (torch.from_numpy(pred), ps)}])
    ours = ev.evaluate()
    ref = _panopticapi_pq(images, dict(enumerate(isthing)))
    stats = ev.stats
    assert stats[:, 0].sum() > 10 and stats[:, 1].sum() > 10 and stats[:, 2].sum() > 10  # all cases occur
    for suffix, key in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        pq, sq, rq, _n = ref[key]
        assert ours["PQ" + suffix] == pytest.approx(pq)
        assert ours["SQ" + suffix] == pytest.approx(sq)
        assert ours["RQ" + suffix] == pytest.approx(rq)


def test_novel_class_table():
    from dreammask.trainer.evaluation.sem_seg import novel_class_table

    ev = SemSegEvaluator(["a", "b", "c"], is_novel=[False, True, True])
    ev.process_pair(torch.tensor([[0, 1, 1, 0]]), torch.tensor([[0, 1, 0, 0]]))
    table = novel_class_table(ev.evaluate(), ev.class_names, ev.is_novel)
    assert table.splitlines()[2:] == ["| b | 50.0 |", "| c | n/a |"]


def test_semantic_ground_truth_from_its_own_annotation(tmp_path):
    """Where a dataset has semantic annotations (ADE20K's ADEChallenge PNGs) they are scored, not the
    panoptic PNG's classes."""
    from PIL import Image

    from dreammask.trainer.data.catalog import DatasetCatalog
    from dreammask.trainer.data.mapper import PanopticDatasetMapper
    from dreammask.trainer.data.register_coco_panoptic import attach_semantic_annotations
    from dreammask.trainer.data.toy import register_toy_real_dataset

    name = register_toy_real_dataset(tmp_path / "real", "toy_sem", num_images=2, size=32)
    dicts, _ = DatasetCatalog.get(name)
    sem_root = tmp_path / "annotations_detectron2"
    sem_root.mkdir()
    from pathlib import Path

    own = np.full((32, 32), 255, dtype=np.uint8)
    own[:16] = 1
    Image.fromarray(own).save(sem_root / (Path(dicts[0]["file_name"]).stem + ".png"))
    assert attach_semantic_annotations(dicts, sem_root) == 1
    mapper = PanopticDatasetMapper(is_train=False)
    assert torch.equal(mapper(dicts[0])["sem_seg"], torch.from_numpy(own.astype(np.int64)))
    assert "sem_seg_file_name" not in dicts[1]
    assert int(mapper(dicts[1])["sem_seg"].ne(255).sum()) > 0  # from the panoptic PNG
