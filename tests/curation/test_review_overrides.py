"""How people's review marks override the selection rules when a version is published."""

from __future__ import annotations

from dreammask.services.curation.publish import apply_review
from dreammask.shared.review import ReviewEvent, SampleReview
from dreammask.shared.schemas import InstanceDecision, SceneDecision


def decision(kept: bool, *inst: tuple[int, bool]) -> SceneDecision:
    return SceneDecision(scene_id="s00001", kept=kept, reason=None if kept else "too few instances kept: 1/3",
                         instances=[InstanceDecision(instance_id=i, category="dog", kept=k,
                                                     reasons=[] if k else ["score<0.30 (quality=0.1)"])
                                    for i, k in inst])


def review(*events: tuple[int | None, str]) -> SampleReview:
    r = SampleReview(job_id="j1", scene_id="s00001")
    for inst, dec in events:
        r.apply(ReviewEvent(instance_id=inst, decision=dec, who="alice/abcd1234"))
    return r


def test_no_review_keeps_the_rules_verdict():
    d = decision(True, (1, True), (2, False))
    out, counts = apply_review(d, None)
    assert out == d and not any(counts.values())


def test_rejected_instance_is_dropped_and_accepted_one_is_kept():
    out, counts = apply_review(decision(True, (1, True), (2, False)), review((1, "reject"), (2, "accept")))
    kept = {i.instance_id: i.kept for i in out.instances}
    assert kept == {1: False, 2: True} and out.kept
    assert "review (rejected by alice/abcd1234)" in out.instances[0].reasons
    assert counts["instances_rejected"] == 1 and counts["instances_accepted"] == 1


def test_sample_marks_override_the_scene_rule_and_clear_undoes():
    out, _ = apply_review(decision(True, (1, True)), review((None, "reject")))
    assert not out.kept and out.reason.startswith("review: rejected by")
    out, _ = apply_review(decision(False, (1, True), (2, False)), review((None, "accept")))
    assert out.kept and out.reason is None
    out, counts = apply_review(decision(True, (1, True)), review((None, "reject"), (None, "clear")))
    assert out.kept and counts["samples_rejected"] == 0


def test_a_sample_with_every_instance_rejected_is_dropped():
    out, _ = apply_review(decision(True, (1, True), (2, True)), review((1, "reject"), (2, "reject")))
    assert not out.kept and out.reason == "review: every instance rejected"
