"""Which synthetic instances and images enter the dataset, and why the others do not.

Every instance is checked against each rule of the job's `Thresholds`; each rule that rejects it is
recorded as a reason of the form ``"<rule> (<what was measured>)"``, e.g. ``"score<0.30 (clip_prob=0.12)"``.
The part before `` (`` names the rule and is what `summarise` counts, so the dataset card can say how
many instances each rule dropped.

An image (scene) is kept when
  * it has at least one instance, and at least one of the novel category,
  * every novel-category instance passes (the image exists to teach that category: a wrong or badly
    segmented novel instance would teach the wrong thing), and
  * the share of its instances that pass is at least ``min_kept_fraction``.
A scene whose instances lack the score the thresholds read is dropped with that as its reason, rather
than silently judged on another score. Scene reasons are ``"<code>: <detail>"``; `summarise` counts codes.

    policy = SelectionPolicy(thresholds)
    decision = policy(annotation)          # SceneAnnotation -> SceneDecision
    card = summarise(decisions)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from dreammask.shared.schemas import (
    InstanceAnnotation,
    InstanceDecision,
    SceneAnnotation,
    SceneDecision,
    Thresholds,
)

# Scene reason codes (the part before ": " in SceneDecision.reason).
NO_INSTANCES = "no instances"
NO_NOVEL = "no novel instance"
MISSING_SCORE = "missing score"
NOVEL_REJECTED = "novel instance rejected"
TOO_FEW_KEPT = "too few instances kept"

# Instance rule for a missing score (the others are built from the thresholds, e.g. "score<0.30").
MISSING_RULE = "missing score"


def rule_of(reason: str) -> str:
    """The rule part of an instance reason: ``"score<0.30 (clip_prob=0.12)"`` -> ``"score<0.30"``."""
    return reason.split(" (", 1)[0]


def code_of(reason: str) -> str:
    """The code part of a scene reason: ``"novel instance rejected: ..."`` -> ``"novel instance rejected"``."""
    return reason.split(": ", 1)[0]


def _fmt(x: float) -> str:
    return f"{x:.2f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2g}"


class SelectionPolicy:
    """Applies one job's `Thresholds` to scene annotations."""

    def __init__(self, thresholds: Thresholds | dict | None = None):
        if thresholds is None:
            thresholds = Thresholds()
        elif isinstance(thresholds, dict):
            thresholds = Thresholds.model_validate(thresholds)
        self.thresholds = thresholds

    # ------------------------------------------------------------------ instances

    def metric_for(self, instance: InstanceAnnotation) -> str:
        """The score name the thresholds read for this instance."""
        metric = self.thresholds.score_metric
        if metric == "auto":
            return "clip_prob" if "clip_prob" in instance.scores else "quality"
        return metric

    def missing_metric(self, instance: InstanceAnnotation) -> str | None:
        """Why this instance cannot be judged (None when it has the score the thresholds read)."""
        metric = self.metric_for(instance)
        if metric in instance.scores:
            return None
        have = ", ".join(sorted(instance.scores)) or "none"
        wanted = (
            "neither 'clip_prob' nor 'quality' (score_metric 'auto')"
            if self.thresholds.score_metric == "auto"
            else f"no {metric!r} score (score_metric {metric!r})"
        )
        return f"instance {instance.instance_id} ({instance.category}) has {wanted}; its scores: {have}"

    def check_instance(self, instance: InstanceAnnotation, image_area: int) -> InstanceDecision:
        t = self.thresholds
        reasons: list[str] = []
        scores = instance.scores

        metric = self.metric_for(instance)
        if metric not in scores:
            reasons.append(f"{MISSING_RULE} ({metric})")
        else:
            value = float(scores[metric])
            if not math.isfinite(value):
                reasons.append(f"score<{_fmt(t.min_score)} ({metric}={value})")
            elif value < t.min_score:
                reasons.append(f"score<{_fmt(t.min_score)} ({metric}={_fmt(value)})")

        # Mask-quality thresholds apply where the mask backend measured them (SAM does, GrabCut does not).
        for key, minimum in (("pred_iou", t.min_pred_iou), ("stability", t.min_stability)):
            if key in scores:
                value = float(scores[key])
                if not math.isfinite(value) or value < minimum:
                    reasons.append(f"{key}<{_fmt(minimum)} ({key}={_fmt(value) if math.isfinite(value) else value})")

        frac = instance.area / image_area if image_area > 0 else 0.0
        if frac < t.min_area_frac:
            reasons.append(f"area_frac<{_fmt(t.min_area_frac)} (area_frac={_fmt(frac)})")
        if frac > t.max_area_frac:
            reasons.append(f"area_frac>{_fmt(t.max_area_frac)} (area_frac={_fmt(frac)})")

        return InstanceDecision(
            instance_id=instance.instance_id, category=instance.category, kept=not reasons, reasons=reasons
        )

    # ------------------------------------------------------------------ scenes

    def __call__(self, annotation: SceneAnnotation) -> SceneDecision:
        image_area = int(annotation.width) * int(annotation.height)
        decisions = [self.check_instance(inst, image_area) for inst in annotation.instances]
        reason = self._scene_reason(annotation, decisions)
        return SceneDecision(scene_id=annotation.scene_id, kept=reason is None, reason=reason, instances=decisions)

    def _scene_reason(self, annotation: SceneAnnotation, decisions: list[InstanceDecision]) -> str | None:
        instances = annotation.instances
        if not instances:
            return f"{NO_INSTANCES}: the annotation holds no instance"
        missing = [m for m in (self.missing_metric(i) for i in instances) if m]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            return (
                f"{MISSING_SCORE}: {missing[0]}{more}; score backend {annotation.score_backend!r} "
                "does not give it: change thresholds.score_metric or the scores backend"
            )
        novel = [(i, d) for i, d in zip(instances, decisions, strict=True) if i.is_novel]
        if not novel:
            return f"{NO_NOVEL}: none of the {len(instances)} instances is of a novel category"
        rejected = [(i, d) for i, d in novel if not d.kept]
        if rejected:
            inst, dec = rejected[0]
            more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
            return f"{NOVEL_REJECTED}: {inst.category} #{inst.instance_id} {'; '.join(dec.reasons)}{more}"
        kept = sum(d.kept for d in decisions)
        need = self.thresholds.min_kept_fraction
        if kept < need * len(decisions) - 1e-9:
            return (
                f"{TOO_FEW_KEPT}: {kept}/{len(decisions)} instances pass "
                f"({kept / len(decisions):.2f} < min_kept_fraction {need:.2f})"
            )
        return None


class SelectionTally:
    """The card's selection counts, fed one scene decision at a time (constant memory at any job size).

    ``kept_instances`` counts the instances that pass their rules in kept scenes (those exported);
    ``dropped_instances_by_rule`` counts, per rule, the instances it rejected (an instance rejected by
    two rules counts under both); ``rejected_instances`` counts instances rejected by at least one rule.
    """

    def __init__(self):
        self.by_reason: Counter[str] = Counter()
        self.by_rule: Counter[str] = Counter()
        self.scenes = self.kept_scenes = self.instances = self.kept_instances = self.rejected = self.in_dropped = 0

    def add(self, d: SceneDecision) -> None:
        self.scenes += 1
        if d.kept:
            self.kept_scenes += 1
        else:
            self.by_reason[code_of(d.reason or "dropped")] += 1
        for inst in d.instances:
            self.instances += 1
            if inst.kept:
                if d.kept:
                    self.kept_instances += 1
                else:
                    self.in_dropped += 1
            else:
                self.rejected += 1
                for rule in dict.fromkeys(rule_of(r) for r in inst.reasons):
                    self.by_rule[rule] += 1

    def result(self) -> dict:
        return {
            "scenes": self.scenes,
            "kept_scenes": self.kept_scenes,
            "dropped_scenes": self.scenes - self.kept_scenes,
            "dropped_scenes_by_reason": dict(self.by_reason.most_common()),
            "instances": self.instances,
            "kept_instances": self.kept_instances,
            "rejected_instances": self.rejected,
            "passing_instances_in_dropped_scenes": self.in_dropped,
            "dropped_instances_by_rule": dict(self.by_rule.most_common()),
        }


def summarise(decisions: Iterable[SceneDecision]) -> dict:
    """Counts for the dataset card (see `SelectionTally`)."""
    tally = SelectionTally()
    for d in decisions:
        tally.add(d)
    return tally.result()
