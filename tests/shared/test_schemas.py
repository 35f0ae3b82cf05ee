from __future__ import annotations

import pytest
from pydantic import ValidationError

from dreammask.shared.schemas import (
    SCHEMA_VERSION,
    JobSpec,
    LayoutObject,
    SceneLayout,
    check_category_name,
    normalise_name,
)


def _errors(**spec):
    with pytest.raises(ValidationError) as e:
        JobSpec(**spec)
    return e.value.errors()


def test_valid_spec_defaults():
    s = JobSpec(train_categories=["person", "dog"], num_novel=3, images_per_category=2)
    assert s.num_scenes == 6
    assert s.schema_version == SCHEMA_VERSION
    assert s.backends.synthesis == "preview"


@pytest.mark.parametrize("cats, fragment", [
    ([], "at least one"),
    (["dog", "Dog"], "duplicates"),
    (["dog", "ca\x00t"], "control"),
    (["dog", "bell\u200b"], "control or invisible"),
    (["dog", "   "], "empty"),
    (["<script>"], "characters outside"),
    (["x" * 200], "limit"),
])
def test_bad_categories_name_the_problem(cats, fragment):
    errs = _errors(train_categories=cats)
    assert errs[0]["loc"][0] == "train_categories"
    assert fragment in errs[0]["msg"]


def test_absurd_sizes_are_rejected_with_their_field():
    assert _errors(train_categories=["a"], image_size=100000)[0]["loc"] == ("image_size",)
    assert _errors(train_categories=["a"], image_size=250)[0]["loc"] == ("image_size",)
    assert _errors(train_categories=["a"], num_novel=0)[0]["loc"] == ("num_novel",)
    assert _errors(train_categories=["a"], synthesis={"steps": 10000})[0]["loc"] == ("synthesis", "steps")


def test_preset_or_categories_exactly_one():
    assert "preset" in _errors()[0]["msg"]
    assert "not both" in _errors(preset="coco_panoptic", train_categories=["a"])[0]["msg"]


def test_unknown_fields_are_rejected():
    assert _errors(train_categories=["a"], num_novels=3)[0]["type"] == "extra_forbidden"


def test_newer_schema_version_is_refused():
    assert "newer" in _errors(train_categories=["a"], schema_version=SCHEMA_VERSION + 1)[0]["msg"]


def test_names():
    assert check_category_name("  potted   plant ") == "potted plant"
    assert normalise_name("wall-other-merged") == "wall"
    assert normalise_name("Sky_Other") == "sky other"


def test_layout_boxes_and_novel_presence():
    with pytest.raises(ValidationError, match="outside"):
        LayoutObject(category="a", box=[0.1, 0.1, 1.2, 0.5])
    with pytest.raises(ValidationError, match="x1 > x0"):
        LayoutObject(category="a", box=[0.5, 0.1, 0.4, 0.5])
    with pytest.raises(ValidationError, match="novel category"):
        SceneLayout(job_id="j", scene_id="s00000", scene_index=0, novel_category="awning", caption="c",
                    objects=[LayoutObject(category="building", box=[0, 0, 1, 1])], seed=1, backend="x")
