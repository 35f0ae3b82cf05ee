"""Panoptic quality (PQ = SQ x RQ) for things, stuff and all classes, as the COCO panopticapi defines it.

Per image: a predicted and a ground-truth segment of the same class match when their IoU > 0.5, where the
union leaves out the predicted pixels that fall on unlabeled ground truth (void, id 0). Unmatched ground
truth is a false negative unless it is a crowd region; an unmatched prediction is a false positive unless
more than half of it lies on void or on a crowd region of its class. Per class,
PQ = sum(IoU of matches) / (TP + FP/2 + FN/2); classes with no TP, FP or FN are left out of the means.
Statistics are sums, so processes evaluate shards and add them up.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.coco_panoptic import VOID

_OFFSET = 1 << 32


def _ids_to(ids: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    if tuple(ids.shape) != tuple(size):
        ids = F.interpolate(ids[None, None].double(), size=size, mode="nearest")[0, 0]
    return ids.cpu().numpy().astype(np.int64)


def pq_image_stats(gt_ids: np.ndarray, gt_segments: list[dict], pred_ids: np.ndarray,
                   pred_segments: list[dict], num_classes: int) -> np.ndarray:
    """(num_classes, 4) array of TP, FP, FN, summed IoU for one image (category ids are contiguous)."""
    stats = np.zeros((num_classes, 4), dtype=np.float64)
    gt_ids = np.asarray(gt_ids, dtype=np.int64)
    pred_ids = np.asarray(pred_ids, dtype=np.int64)
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"prediction is {pred_ids.shape}, ground truth {gt_ids.shape}")
    gt_segs = {int(s["id"]): s for s in gt_segments}
    pred_segs = {int(s["id"]): s for s in pred_segments}
    for s in list(gt_segs.values()) + list(pred_segs.values()):
        if not 0 <= int(s["category_id"]) < num_classes:
            raise ValueError(f"segment category {s['category_id']} outside the {num_classes} classes")

    labels, counts = np.unique(gt_ids, return_counts=True)
    gt_area = dict(zip(labels.tolist(), counts.tolist()))
    labels, counts = np.unique(pred_ids, return_counts=True)
    pred_area = dict(zip(labels.tolist(), counts.tolist()))
    for pid in pred_area:
        if pid != VOID and pid not in pred_segs:
            raise ValueError(f"predicted segment id {pid} is in the id map but not in the segment list")
    pred_segs = {k: v for k, v in pred_segs.items() if pred_area.get(k, 0) > 0}
    gt_segs = {k: v for k, v in gt_segs.items() if gt_area.get(k, 0) > 0}

    joint = gt_ids * _OFFSET + pred_ids
    labels, counts = np.unique(joint, return_counts=True)
    inter = {(int(lab // _OFFSET), int(lab % _OFFSET)): int(c) for lab, c in zip(labels, counts)}

    gt_matched, pred_matched = set(), set()
    for (g, p), n in inter.items():
        if g not in gt_segs or p not in pred_segs:
            continue
        gs, ps = gt_segs[g], pred_segs[p]
        if gs.get("iscrowd", 0) or int(gs["category_id"]) != int(ps["category_id"]):
            continue
        union = pred_area[p] + gt_area[g] - n - inter.get((VOID, p), 0)
        iou = n / union
        if iou > 0.5:
            c = int(gs["category_id"])
            stats[c, 0] += 1
            stats[c, 3] += iou
            gt_matched.add(g)
            pred_matched.add(p)

    crowd_by_class = {}
    for g, gs in gt_segs.items():
        if g in gt_matched:
            continue
        if gs.get("iscrowd", 0):
            crowd_by_class[int(gs["category_id"])] = g
            continue
        stats[int(gs["category_id"]), 2] += 1

    for p, ps in pred_segs.items():
        if p in pred_matched:
            continue
        c = int(ps["category_id"])
        ignored = inter.get((VOID, p), 0)
        if c in crowd_by_class:
            ignored += inter.get((crowd_by_class[c], p), 0)
        if ignored / pred_area[p] > 0.5:
            continue
        stats[c, 1] += 1
    return stats


def pq_from_stats(stats: np.ndarray, isthing: list[bool], class_names: list[str] | None = None,
                  is_novel: list[bool] | None = None, seen: list[bool] | None = None) -> dict[str, float]:
    """PQ, SQ, RQ over all classes, things (_th), stuff (_st), FC-CLIP's seen/unseen (_seen, _unseen) and
    DreamMask's base/novel (_base, _novel) classes, and per class (PQ-, SQ-, RQ-<name>)."""
    tp, fp, fn, iou = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    counted = (tp + fp + fn) > 0
    denom = tp + 0.5 * fp + 0.5 * fn
    with np.errstate(divide="ignore", invalid="ignore"):
        pq = np.where(counted, iou / np.where(denom > 0, denom, 1), np.nan)
        sq = np.where(counted, np.where(tp > 0, iou / np.where(tp > 0, tp, 1), 0.0), np.nan)
        rq = np.where(counted, tp / np.where(denom > 0, denom, 1), np.nan)
    thing = np.array(isthing, dtype=bool)
    res: dict[str, float] = {}
    groups = {"": np.ones_like(thing), "_th": thing, "_st": ~thing}
    if seen is not None:
        seen_mask = np.array(seen, dtype=bool)
        groups["_seen"], groups["_unseen"] = seen_mask, ~seen_mask
    if is_novel is not None and any(is_novel):
        novel = np.array(is_novel, dtype=bool)
        groups["_base"], groups["_novel"] = ~novel, novel
    for suffix, sel in groups.items():
        keep = sel & counted
        for name, arr in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
            res[name + suffix] = float(100 * arr[keep].mean()) if keep.any() else float("nan")
    if class_names is not None:
        for i, (name, c) in enumerate(zip(class_names, counted)):
            if c:
                res[f"PQ-{name}"], res[f"SQ-{name}"], res[f"RQ-{name}"] = (
                    float(100 * pq[i]), float(100 * sq[i]), float(100 * rq[i]))
    return res


class PanopticEvaluator:
    def __init__(self, class_names: list[str], isthing: list[bool], is_novel: list[bool] | None = None,
                 seen: list[bool] | None = None):
        self.class_names = list(class_names)
        self.isthing = list(isthing)
        self.is_novel = list(is_novel) if is_novel is not None else None
        self.seen = list(seen) if seen is not None else None
        if len(self.isthing) != len(self.class_names):
            raise ValueError("isthing must have one flag per class")
        self.reset()

    def reset(self) -> None:
        self.stats = np.zeros((len(self.class_names), 4), dtype=np.float64)

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            gt_ids, gt_segments = inp["pan_seg"]
            pred_ids, pred_segments = out["panoptic_seg"]
            size = tuple(gt_ids.shape)
            self.stats += pq_image_stats(
                gt_ids.cpu().numpy(), gt_segments, _ids_to(pred_ids, size), pred_segments, len(self.class_names)
            )

    def reduce(self) -> None:
        from .. import distributed as dist

        self.stats = dist.all_reduce_sum(torch.from_numpy(self.stats)).numpy()

    def evaluate(self) -> dict[str, float]:
        return pq_from_stats(self.stats, self.isthing, self.class_names, self.is_novel, self.seen)
