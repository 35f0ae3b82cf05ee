"""FC-CLIP's class lists with synonyms: shipped files, the seen rule, and their use in training/evaluation."""

import pytest
import torch

from dreammask.trainer.data.build import Vocabulary
from dreammask.trainer.data.coco_panoptic import DatasetMetadata
from dreammask.trainer.data.vocabulary import (
    available_vocabularies,
    load_vocabulary_file,
    seen_by_synonyms,
    split_synonyms,
    synonyms_dict,
)

SIZES = {"coco_panoptic": 133, "ade20k_150": 150, "ade20k_847": 847, "pascal_context_59": 59,
         "pascal_context_459": 459, "cityscapes": 19}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_shipped_files_parse_with_their_class_counts(name):
    v = load_vocabulary_file(name)
    assert len(v.synonyms) == SIZES[name] == len(set(v.dataset_ids))
    assert all(syns and all(s == s.strip() and s for s in syns) for syns in v.synonyms)
    assert set(available_vocabularies()) == set(SIZES)


def test_synonyms_are_fcclips():
    coco = load_vocabulary_file("coco_panoptic").by_dataset_id()
    assert coco[63] == ["couch", "sofa", "sofas"]
    assert coco[1][:3] == ["person", "child", "girl"]
    assert load_vocabulary_file("coco_panoptic").isthing[:1] == [True]
    ade = load_vocabulary_file("ade20k_150")  # the prompt-engineered list, not the plain class names
    assert ade.synonyms[6] == ["road", "route", "street", "roads", "streets", "routes"] and ade.isthing[6] is False
    assert ade.synonyms[8][:2] == ["windowpane", "window"] and ade.isthing[8] is True
    assert ade.by_dataset_id()[149] == ["flag", "flags"]
    assert split_synonyms("toilet, can, commode") == ["toilet", "can", "commode"]


def test_seen_rule_is_any_synonym_overlap():
    coco = load_vocabulary_file("coco_panoptic").synonyms
    ade = load_vocabulary_file("ade20k_150")
    seen = dict(zip((s[0] for s in ade.synonyms), seen_by_synonyms(ade.synonyms, coco)))
    assert seen["sofa"]  # COCO "couch,sofa,sofas"
    assert seen["palm tree"]  # COCO "tree,trees,palm tree,bushes"
    assert not seen["awning"] and not seen["chandelier"]
    # exact-name matching would have called "sofa" novel:
    assert "sofa" not in {s[0] for s in coco}


def test_metadata_takes_fcclips_names_as_they_are_and_vocabulary_merges_them():
    meta = DatasetMetadata("coco_like", ["couch", "door-stuff", "orange"], [63, 112, 55], [True, False, True])
    meta.with_vocabulary_file("coco_panoptic")
    # FC-CLIP's lists as they are: the JSON's own names ("door-stuff", the ambiguous "orange") are not put first
    coco = load_vocabulary_file("coco_panoptic").by_dataset_id()
    assert meta.synonyms == [coco[63], coco[112], coco[55]] and meta.curated
    assert "door-stuff" not in meta.synonyms[1] and "orange" not in meta.synonyms[2]
    vocab = Vocabulary()
    vocab.add(meta)
    # a curated export names COCO's classes plainly: FC-CLIP's list stays, the bare name is not added back
    vocab.add(DatasetMetadata("syn", ["orange", "awning"], [1, 2], [True, True], is_novel=[False, True]))
    assert vocab.names == ["couch", "door-stuff", "orange", "awning"]
    assert vocab.synonyms == [coco[63], coco[112], coco[55], ["awning"]]
    assert vocab.is_novel == [False, False, False, True]
    # the seen rule's reference is the first dataset's classes only (FC-CLIP's DATASETS.TRAIN[0])
    assert vocab.seen_reference == [coco[63], coco[112], coco[55]]
    # a plain list is replaced by a curated one where a later dataset brings it
    v2 = Vocabulary()
    v2.add(DatasetMetadata("syn", ["couch"], [1], [True]))
    v2.add(meta)
    assert v2.synonyms[0] == coco[63] and v2.seen_reference == [["couch"]]
    assert synonyms_dict(["couch"], [coco[63]]) == {"couch": ["sofa", "sofas"]}
    with pytest.raises(ValueError, match="neither by id nor by name"):
        DatasetMetadata("x", ["a"], [9999], [True]).with_vocabulary_file("coco_panoptic")
    # ids numbered differently: matched by the class's first name
    ade = DatasetMetadata("ade", ["wall", "building"], [150, 151], [False, False]).with_vocabulary_file("ade20k_150")
    assert ade.synonyms[1] == ["building", "buildings", "edifice", "edifices"]


def test_model_classifier_uses_synonyms(tiny_model_cfg):
    """A class given synonyms gets one text row per synonym (max-ensembled); given one list per class, exactly
    those names are embedded (not the class name)."""
    from dreammask.trainer.testing import build_tiny_model

    model = build_tiny_model(tiny_model_cfg)
    names = ["couch", "door-stuff"]
    model.set_vocabulary(names, synonyms=synonyms_dict(names, [["couch", "sofa", "sofas"], ["door-stuff", "door"]]))
    assert model.num_templates == [3, 2]
    assert model.text_embeddings.shape[0] == 5
    with_dict = model.text_embeddings.clone()
    model.set_vocabulary(names, synonyms=[["couch", "sofa", "sofas"], ["door", "doors"]])
    assert model.num_templates == [3, 2]
    assert torch.equal(model.text_embeddings[:3], with_dict[:3])
    assert not torch.equal(model.text_embeddings[3], with_dict[3])  # "door-stuff" is not embedded
    only_door = model.text_classifier(["door"])[0]
    assert torch.allclose(model.text_embeddings[3], only_door[0])
