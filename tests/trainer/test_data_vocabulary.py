"""FC-CLIP's class lists with synonyms: shipped files, the seen rule, and their use in training/evaluation."""

import pytest

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
    ade = load_vocabulary_file("ade20k_150")
    assert ade.synonyms[6] == ["road", "route"] and ade.isthing[6] is False
    assert split_synonyms("toilet, can, commode") == ["toilet", "can", "commode"]


def test_seen_rule_is_any_synonym_overlap():
    coco = load_vocabulary_file("coco_panoptic").synonyms
    ade = load_vocabulary_file("ade20k_150")
    seen = dict(zip((s[0] for s in ade.synonyms), seen_by_synonyms(ade.synonyms, coco)))
    assert seen["sofa"]  # COCO "couch,sofa,sofas"
    assert seen["palm"]  # ADE "palm, palm tree"; COCO "tree,trees,palm tree,bushes"
    assert not seen["awning"] and not seen["chandelier"]
    # exact-name matching would have called "sofa" novel:
    assert "sofa" not in {s[0] for s in coco}


def test_metadata_takes_synonyms_by_dataset_id_and_vocabulary_merges_them():
    meta = DatasetMetadata("coco_like", ["couch", "door-stuff"], [63, 112], [True, False])
    meta.with_vocabulary_file("coco_panoptic")
    assert meta.synonyms == [["couch", "sofa", "sofas"], ["door-stuff", "door", "doors"]]
    vocab = Vocabulary()
    vocab.add(meta)
    vocab.add(DatasetMetadata("syn", ["couch", "awning"], [1, 2], [True, True], is_novel=[False, True]))
    assert vocab.synonyms == [["couch", "sofa", "sofas"], ["door-stuff", "door", "doors"], ["awning"]]
    assert synonyms_dict(vocab.names, vocab.synonyms) == {"couch": ["sofa", "sofas"], "door-stuff": ["door", "doors"]}
    with pytest.raises(ValueError, match="neither by id nor by name"):
        DatasetMetadata("x", ["a"], [9999], [True]).with_vocabulary_file("coco_panoptic")
    # ids numbered differently (ADE20K exports 1..150): matched by the class's first name
    ade = DatasetMetadata("ade", ["wall", "road, route"], [150, 151], [False, False]).with_vocabulary_file("ade20k_150")
    assert ade.synonyms == [["wall"], ["road, route", "road", "route"]]


def test_model_classifier_uses_synonyms(tiny_model_cfg):
    """A class given synonyms gets one text row per synonym (max-ensembled)."""
    from dreammask.trainer.testing import build_tiny_model

    model = build_tiny_model(tiny_model_cfg)
    names = ["couch", "door-stuff"]
    model.set_vocabulary(names, synonyms=synonyms_dict(names, [["couch", "sofa", "sofas"], ["door-stuff", "door"]]))
    assert model.num_templates == [3, 2]
    assert model.text_embeddings.shape[0] == 5
