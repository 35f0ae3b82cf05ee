"""Semantic segmentation metrics from a confusion matrix: mIoU, fwIoU, pixel accuracy, per-class IoU.

detectron2's SemSegEvaluator rule: a class counts in mIoU, mACC and fwIoU only when it occurs in the
ground truth of the evaluated images (pos_gt > 0); a class predicted but absent from the ground truth is
left out (NaN), not scored 0. Ignored pixels (the dataset's ignore label, 255 or 65535) count nowhere,
predictions on them included. Two splits of the classes:
- seen / unseen, FC-CLIP's rule (a class is seen when one of its names is a name of the first training
  dataset's classes): `mIoU_seen`, `mIoU_unseen`;
- base / novel, DreamMask's (novel: a category the platform synthesised, or flagged by the evaluation
  dataset): `mIoU_base`, `mIoU_novel` and their harmonic mean `hIoU`, the per-class comparison of novel
  categories the paper reports.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.coco_panoptic import IGNORE_LABEL


def semantic_prediction(sem_seg: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(K, H, W) scores -> (H, W) labels, resized (bilinear, on the scores) to `size` when it differs."""
    if sem_seg.dim() == 2:
        pred = sem_seg
        if size is not None and tuple(pred.shape) != tuple(size):
            pred = F.interpolate(pred[None, None].float(), size=size, mode="nearest")[0, 0].long()
        return pred.long()
    if size is not None and tuple(sem_seg.shape[-2:]) != tuple(size):
        sem_seg = F.interpolate(sem_seg[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return sem_seg.argmax(0)


class SemSegEvaluator:
    def __init__(self, class_names: list[str], is_novel: list[bool] | None = None,
                 ignore_label: int = IGNORE_LABEL, seen: list[bool] | None = None):
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.is_novel = list(is_novel) if is_novel is not None else [False] * self.num_classes
        self.seen = list(seen) if seen is not None else None
        if len(self.is_novel) != self.num_classes or (self.seen is not None and len(self.seen) != self.num_classes):
            raise ValueError("is_novel and seen must have one flag per class")
        self.ignore_label = ignore_label
        self.reset()

    def reset(self) -> None:
        self.conf = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64)

    def process_pair(self, gt: torch.Tensor, pred: torch.Tensor) -> None:
        """Accumulate one image: gt (H, W) labels with ignore, pred (H, W) labels."""
        gt, pred = gt.reshape(-1).long().cpu(), pred.reshape(-1).long().cpu()
        if gt.shape != pred.shape:
            raise ValueError(f"prediction has {pred.numel()} pixels, ground truth {gt.numel()}")
        keep = gt != self.ignore_label
        gt, pred = gt[keep], pred[keep]
        if gt.numel() and (int(gt.max()) >= self.num_classes or int(gt.min()) < 0):
            raise ValueError(f"ground-truth label {int(gt.max())} outside the {self.num_classes} classes")
        if pred.numel() and (int(pred.max()) >= self.num_classes or int(pred.min()) < 0):
            raise ValueError(f"predicted label outside the {self.num_classes} classes")
        self.conf += torch.bincount(gt * self.num_classes + pred, minlength=self.num_classes ** 2).reshape(
            self.num_classes, self.num_classes
        )

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            gt = inp["sem_seg"]
            self.process_pair(gt, semantic_prediction(out["sem_seg"], tuple(gt.shape)))

    def reduce(self) -> None:
        """Sum the confusion matrix over processes (each evaluated its own shard)."""
        from .. import distributed as dist

        self.conf = dist.all_reduce_sum(self.conf)

    def evaluate(self) -> dict[str, float]:
        conf = self.conf.double().numpy()
        tp = np.diag(conf)
        pos_gt = conf.sum(1)
        pos_pred = conf.sum(0)
        union = pos_gt + pos_pred - tp
        valid = pos_gt > 0  # detectron2: acc_valid, and iou_valid = acc_valid & (union > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(valid & (union > 0), tp / union, np.nan)
            acc = np.where(valid, tp / pos_gt, np.nan)
        total = pos_gt.sum()
        res: dict[str, float] = {
            "mIoU": _pct(_nanmean(iou)),
            "fwIoU": _pct(np.nansum(iou * pos_gt) / total) if total else float("nan"),
            "mACC": _pct(_nanmean(acc)),
            "pACC": _pct(tp.sum() / total) if total else float("nan"),
        }
        if self.seen is not None:
            seen = np.array(self.seen, dtype=bool)
            res["mIoU_seen"], res["mIoU_unseen"] = _pct(_nanmean(iou[seen])), _pct(_nanmean(iou[~seen]))
        novel = np.array(self.is_novel, dtype=bool)
        if novel.any():
            base, new = _pct(_nanmean(iou[~novel])), _pct(_nanmean(iou[novel]))
            res["mIoU_base"], res["mIoU_novel"] = base, new
            res["hIoU"] = 2 * base * new / (base + new) if base + new > 0 else 0.0
        for name, v in zip(self.class_names, iou):
            res[f"IoU-{name}"] = _pct(v)
        return res


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def _pct(x) -> float:
    with np.errstate(invalid="ignore"):
        return float(100.0 * x) if x == x else float("nan")


def novel_class_table(results: dict[str, float], class_names: list[str], is_novel: list[bool]) -> str:
    """Markdown table of the per-class IoU of the novel classes (the DreamMask paper's per-class figure),
    from SemSegEvaluator.evaluate() results; "n/a" where a class is absent from the ground truth."""
    rows = ["| novel class | IoU |", "| --- | ---: |"]
    for name, novel in zip(class_names, is_novel):
        if novel:
            v = results.get(f"IoU-{name}", float("nan"))
            rows.append(f"| {name} | {'n/a' if v != v else f'{v:.1f}'} |")
    return "\n".join(rows)
