"""Selection policy cases built by hand, each with the outcome the rules in docs/annotation.md imply."""

from __future__ import annotations

import numpy as np
import pytest

from dreammask.services.annotation.mask_ops import encode_rle
from dreammask.services.curation.selection import SelectionPolicy, summarise
from dreammask.shared.schemas import InstanceAnnotation, SceneAnnotation, Thresholds

W = H = 100  # image area 10_000 pixels
_EMPTY_RLE = encode_rle(np.zeros((H, W), bool))


def inst(i, category="dog", novel=False, area=1000, **scores):
    return InstanceAnnotation(
        instance_id=i, category=category, is_novel=novel, bbox=[0, 0, 10, 10], mask=_EMPTY_RLE,
        area=area, scores=scores,
    )


def scene(*instances, scene_id="s0", score_backend="clip"):
    return SceneAnnotation(
        job_id="j", scene_id=scene_id, image_key="k", width=W, height=H, mask_backend="sam",
        score_backend=score_backend, instances=list(instances),
    )


def test_all_pass_keeps_scene():
    policy = SelectionPolicy(Thresholds(min_score=0.3, min_pred_iou=0.5, min_stability=0.6))
    d = policy(scene(
        inst(0, "awning", novel=True, clip_prob=0.8, pred_iou=0.9, stability=0.95),
        inst(1, "building", clip_prob=0.5, pred_iou=0.7, stability=0.7),
    ))
    assert d.kept and d.reason is None
    assert [i.kept for i in d.instances] == [True, True]
    assert all(i.reasons == [] for i in d.instances)


def test_every_rule_that_rejects_is_recorded():
    policy = SelectionPolicy(Thresholds(min_score=0.3, min_pred_iou=0.5, min_stability=0.6, max_area_frac=0.9))
    d = policy(scene(
        inst(0, "awning", novel=True, area=9600, clip_prob=0.12, pred_iou=0.2, stability=0.95),
        inst(1, "building", clip_prob=0.9),
    ))
    novel = d.instances[0]
    assert not novel.kept
    assert novel.reasons == ["score<0.30 (clip_prob=0.12)", "pred_iou<0.50 (pred_iou=0.20)", "area_frac>0.90 (area_frac=0.96)"]
    assert not d.kept and d.reason.startswith("novel instance rejected: awning #0 score<0.30")
    assert d.instances[1].kept


def test_auto_metric_falls_back_to_quality_and_ignores_absent_sam_scores():
    # GrabCut + geometric: no clip_prob, no pred_iou/stability -> quality is read, mask rules skipped.
    policy = SelectionPolicy(Thresholds(min_score=0.5, min_pred_iou=0.9, min_stability=0.9))
    d = policy(scene(inst(0, "awning", novel=True, quality=0.7), inst(1, "road", quality=0.4),
                     score_backend="geometric"))
    assert d.instances[0].kept
    assert d.instances[1].reasons == ["score<0.50 (quality=0.40)"]
    # one of two kept = 0.5 >= default min_kept_fraction 0.5
    assert d.kept


def test_kept_fraction_below_minimum_drops_scene():
    policy = SelectionPolicy(Thresholds(min_score=0.3, min_kept_fraction=0.75))
    d = policy(scene(
        inst(0, "awning", novel=True, clip_prob=0.9),
        inst(1, "road", clip_prob=0.1),
        inst(2, "car", clip_prob=0.2),
        inst(3, "tree", clip_prob=0.95),
    ))
    assert [i.kept for i in d.instances] == [True, False, False, True]
    assert not d.kept
    assert d.reason == "too few instances kept: 2/4 instances pass (0.50 < min_kept_fraction 0.75)"


def test_area_too_small():
    policy = SelectionPolicy(Thresholds(min_area_frac=0.01))
    d = policy(scene(inst(0, "awning", novel=True, area=50, clip_prob=0.9)))
    assert d.instances[0].reasons == ["area_frac<0.01 (area_frac=0.005)"]
    assert not d.kept


def test_explicit_metric_missing_drops_scene_with_reason():
    policy = SelectionPolicy(Thresholds(score_metric="clip_cosine"))
    d = policy(scene(inst(0, "awning", novel=True, quality=0.9), score_backend="geometric"))
    assert not d.kept
    assert d.reason.startswith("missing score: instance 0 (awning) has no 'clip_cosine' score")
    assert "geometric" in d.reason and "score_metric" in d.reason
    assert d.instances[0].reasons == ["missing score (clip_cosine)"]


def test_auto_metric_with_no_score_at_all():
    d = SelectionPolicy(Thresholds())(scene(inst(0, "awning", novel=True, pred_iou=0.9)))
    assert not d.kept and "neither 'clip_prob' nor 'quality'" in d.reason


def test_no_instances_and_no_novel():
    policy = SelectionPolicy(Thresholds())
    empty = policy(scene())
    assert not empty.kept and empty.reason.startswith("no instances")
    only_train = policy(scene(inst(0, "road", clip_prob=0.9)))
    assert not only_train.kept and only_train.reason.startswith("no novel instance")


def test_nan_score_is_rejected():
    d = SelectionPolicy(Thresholds())(scene(inst(0, "awning", novel=True, clip_prob=float("nan"))))
    assert not d.instances[0].kept and not d.kept


def test_thresholds_from_dict_and_summary_counts():
    policy = SelectionPolicy({"min_score": 0.3, "min_stability": 0.8})
    decisions = [
        policy(scene(inst(0, "awning", novel=True, clip_prob=0.9, stability=0.9),
                     inst(1, "road", clip_prob=0.1, stability=0.5), scene_id="a")),   # kept, 1 rejected by 2 rules
        policy(scene(inst(0, "awning", novel=True, clip_prob=0.1, stability=0.9),
                     inst(1, "road", clip_prob=0.9, stability=0.9), scene_id="b")),   # novel rejected
        policy(scene(scene_id="c")),                                                  # empty
        policy(scene(inst(0, "stairway", novel=True, clip_prob=0.6), scene_id="d")),  # kept
    ]
    assert [d.kept for d in decisions] == [True, False, False, True]
    s = summarise(decisions)
    assert s["scenes"] == 4 and s["kept_scenes"] == 2 and s["dropped_scenes"] == 2
    assert s["dropped_scenes_by_reason"] == {"novel instance rejected": 1, "no instances": 1}
    assert s["instances"] == 5
    assert s["kept_instances"] == 2  # scene a's awning, scene d's stairway
    assert s["rejected_instances"] == 2
    assert s["passing_instances_in_dropped_scenes"] == 1  # scene b's road
    assert s["dropped_instances_by_rule"] == {"score<0.30": 2, "stability<0.80": 1}


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="min_area_frac"):
        SelectionPolicy({"min_area_frac": 0.5, "max_area_frac": 0.1})
