"""The scene-frequency prior of the embedded CNA backend: what the sources say of a name, how a name is
matched to them, the prior's scale, and its effect on the ranking (the shared screen still applies)."""

from __future__ import annotations

import math

import pytest

from dreammask.services.association.backends.embedding import EmbeddingAssociation, ranking_score, usefulness
from dreammask.services.association.scene_prior import (
    STUFF_PRIOR,
    UNKNOWN_PRIOR,
    SceneFrequency,
    ScenePrior,
    frequency_bin,
)
from dreammask.services.association.similarity import Screened
from dreammask.services.association.wordnet import get_wordnet
from dreammask.shared.settings import Settings
from dreammask.shared.vocabulary import candidate_vocabulary, coco_panoptic, lvis_image_counts, stuff_classes


@pytest.fixture(scope="module")
def prior():
    return ScenePrior(get_wordnet())


def test_sources_load():
    counts = lvis_image_counts()
    assert len(counts) == 1203 and counts["awning"] == 1395 and counts["breechcloth"] == 2
    assert len(stuff_classes()) == 89 and {"stairs", "fence", "wall", "sky", "pavement"} <= set(stuff_classes())
    vocab = set(candidate_vocabulary())
    assert set(stuff_classes()) <= vocab  # stuff classes are candidates too
    assert "column" not in vocab  # an ADE20K-847 name no other source lists is gone


def test_bins_follow_lvis():
    assert [frequency_bin(n) for n in (1, 10, 11, 100, 101, 1977)] == ["r", "r", "c", "c", "f", "f"]


@pytest.mark.parametrize("name,lvis,count,stuff", [
    ("awning", "awning", 1395, None),  # LVIS, frequent
    ("awnings", "awning", 1395, None),  # plural
    ("curtains", "curtain", 1890, "curtain"),  # in both sources
    ("stairs", None, None, "stairs"),  # a stuff class LVIS lacks
    ("cabinet/shelf", "cabinet", 1659, "cabinet"),  # Objects365's alternatives
    ("trash bin/can", "trash can", 1883, None),  # a one-word alternative shares the other's words
    ("breechcloth", "breechcloth", 2, None),  # rare
])
def test_lookup_by_spelling(prior, name, lvis, count, stuff):
    f = prior.lookup(name)
    assert (f.lvis_name, f.image_count, f.stuff_name) == (lvis, count, stuff)
    assert f.frequency == (frequency_bin(count) if count else None)


def test_lookup_by_wordnet_sense_only_with_wordnet(prior):
    assert prior.lookup("automobile").lvis_name == "car"  # car.n.01, LVIS's car
    assert prior.lookup("couch").lvis_name == "sofa"
    bare = ScenePrior()
    assert not bare.lookup("automobile").known and bare.lookup("awning").lvis_name == "awning"


def test_prior_scale(prior):
    rare, common, frequent = prior.lookup("wooden leg"), prior.lookup("alcohol"), prior.lookup("awning")
    assert (rare.frequency, common.frequency, frequent.frequency) == ("r", "c", "f")
    assert 0 < rare.prior < common.prior < frequent.prior <= 1
    assert frequent.prior == pytest.approx(math.log1p(1395) / math.log1p(2000))
    assert prior.lookup("stairs").prior == STUFF_PRIOR == 1.0
    unknown = prior.lookup("zzz gadget")
    assert not unknown.known and not unknown.scene and unknown.prior == UNKNOWN_PRIOR
    assert rare.prior < UNKNOWN_PRIOR < common.prior  # unknown ranks at LVIS's rare/common border


def test_scene_categories_are_frequent_common_or_stuff(prior):
    assert prior.lookup("awning").scene and prior.lookup("alcohol").scene and prior.lookup("stairs").scene
    assert not prior.lookup("breechcloth").scene and not prior.lookup("zzz gadget").scene
    assert "LVIS" in prior.lookup("awning").describe() and "frequent" in prior.lookup("awning").describe()
    assert SceneFrequency().describe() == "in no scene-frequency source"


def test_ranking_score_adds_the_weighted_prior():
    k = Screened("awning", "building", 0.5, 0.45, True, 1.0)
    assert ranking_score(k, 0.9, 0.0) == usefulness(k)
    assert ranking_score(k, 0.9, 0.2) == pytest.approx(usefulness(k) + 0.18)


def test_weight_must_not_be_negative():
    with pytest.raises(ValueError, match="cna_scene_prior_weight"):
        Settings(cna_scene_prior_weight=-0.1)


def test_prior_moves_coco_proposals_to_scene_categories(shared_cache_dir, prior):
    """COCO panoptic's 133 classes, 60 proposals: with the default weight more are frequent or common
    scene categories than with the prior off, fewer are rare, and the screen still drops what the issue found."""
    settings = Settings(cache_dir=shared_cache_dir, cna_scene_prior_weight=0.0)
    backend = EmbeddingAssociation.from_settings(settings)
    train = list(coco_panoptic()[0])
    off, _ = backend.associate(train, 60, seed=0)
    settings.cna_scene_prior_weight = Settings.model_fields["cna_scene_prior_weight"].default
    on, dropped = backend.associate(train, 60, seed=0)
    assert len(off) == len(on) == 60

    def share(novel, pred):
        return sum(pred(prior.lookup(n.name)) for n in novel) / len(novel)

    assert share(on, lambda f: f.scene) >= share(off, lambda f: f.scene) + 0.15
    assert share(on, lambda f: f.frequency == "r") < share(off, lambda f: f.frequency == "r")
    for disguised in ("cupboard", "countertop", "mug", "telephone", "doughnut"):
        assert disguised not in {n.name for n in on}
    why = {d["name"]: d["reason"] for d in dropped}
    assert why["cupboard"] == "kind of cabinet-merged (WordNet)"
    assert all("LVIS" in n.reason or "COCO-Stuff" in n.reason or "no scene-frequency" in n.reason for n in on)
    assert backend.describe()["scene_prior_weight"] == settings.cna_scene_prior_weight
