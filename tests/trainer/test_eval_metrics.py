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
    ev = SemSegEvaluator(["a", "b", "c", "d"], is_novel=[False, False, True, True])
    gt = torch.tensor([[0, 0, 2, 2]])
    pred = torch.tensor([[0, 3, 2, 2]])
    ev.process_pair(gt, pred)
    # a: 1/2, b: absent everywhere (left out), c: 2/2, d: predicted only -> 0
    r = ev.evaluate()
    assert math.isnan(r["IoU-b"])
    assert r["IoU-d"] == 0.0
    assert r["mIoU"] == pytest.approx((50 + 100 + 0) / 3)
    assert r["mIoU_seen"] == pytest.approx(50)
    assert r["mIoU_novel"] == pytest.approx(50)
    assert r["hIoU"] == pytest.approx(50)


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
    assert r["PQ"] == 100 and r["PQ_novel"] == 100 and r["PQ_seen"] == 100
    assert ev.stats[:, 0].tolist() == [2, 2]
    bad = {"panoptic_seg": (torch.tensor([[4, 4], [7, 7]]), out["panoptic_seg"][1])}
    with pytest.raises(ValueError, match="not in the segment list"):
        ev.process([{"pan_seg": (gt, segs)}], [bad])
