"""The embedded default backends: real, light algorithms with known properties."""

from __future__ import annotations

import numpy as np
import pytest

from dreammask.services.annotation.backends.geometric import GeometricScores
from dreammask.services.annotation.backends.grabcut import GrabCutMasks
from dreammask.services.association.backends.embedding import EmbeddingAssociation
from dreammask.services.association.backends.prior_layout import PriorLayoutSampler, _iou
from dreammask.services.association.embedding_model import get_text_embedder
from dreammask.services.association.similarity import lexical_screen_for, screen_candidates
from dreammask.services.synthesis.backends.preview import PreviewRenderer
from dreammask.shared.backends import LayoutRequest
from dreammask.shared.schemas import LayoutObject, NovelCategory, SceneLayout, SynthesisParams
from dreammask.shared.seeding import SALTS, scene_seed, stage_seed
from dreammask.shared.settings import Settings


@pytest.fixture(scope="module")
def settings(shared_cache_dir):
    return Settings(cache_dir=shared_cache_dir)


@pytest.fixture(scope="module")
def embedder(settings):
    return get_text_embedder(settings)


def test_embedder_is_the_real_minilm(embedder):
    e = embedder.encode(["dog", "puppy", "carburetor"])
    assert e.shape == (3, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2  # meaning, not noise


def test_screening_drops_members_synonyms_hyponyms_and_duplicates(embedder, settings):
    train = ["dog", "car", "building"]
    cands = ["dogs", "puppy", "sports car", "awning", "awnings", "traffic light", "automobile", "light bulb",
             "lightbulb"]
    kept, dropped = screen_candidates(embedder, cands, train, synonym_threshold=0.75, dedup_threshold=0.9,
                                      lexical=lexical_screen_for(train, settings))
    reasons = {d["name"]: d["reason"] for d in dropped}
    assert reasons["dogs"] == "synonym of dog (same name)"
    assert reasons["sports car"] == "kind of car (its name ends in it)"
    assert reasons["automobile"] == "synonym of car (WordNet)"
    assert reasons["puppy"] == "kind of dog (WordNet)"
    assert reasons["awnings"] == "duplicate of awning"
    assert reasons["lightbulb"] == "duplicate of light bulb"
    names = [k.name for k in kept]
    assert names == ["awning", "traffic light", "light bulb"]
    nearest = {k.name: k.nearest for k in kept}
    assert nearest["awning"] == "building" and nearest["traffic light"] == "car"
    assert all(k.isthing is True for k in kept)


def test_screen_off_keeps_the_embedding_rules_only(embedder):
    kept, dropped = screen_candidates(embedder, ["puppy", "awning", "dogs"], ["dog"], 0.75, 0.9, lexical=None)
    assert [k.name for k in kept] == ["awning"] and kept[0].isthing is None
    why = {d["name"]: d["reason"] for d in dropped}
    assert why["puppy"].startswith("synonym of dog (embedding cosine 0.")  # the threshold does the work
    assert why["dogs"] == "synonym of dog (same name)"


def test_embedding_cna_proposes_related_novel_names(settings):
    backend = EmbeddingAssociation.from_settings(settings)
    train = ["person", "dog", "car", "building", "sky", "road", "tree"]
    novel, dropped = backend.associate(train, 6, seed=0)
    assert len(novel) == 6
    names = [n.name for n in novel]
    assert len(set(names)) == 6 and not set(names) & set(train)
    for n in novel:
        assert n.nearest_train in train and 0 < n.score < settings.cna_synonym_threshold
        assert isinstance(n.isthing, bool)
    why = {d["name"]: d["reason"] for d in dropped}
    assert why["dog"] == "synonym of dog (same name)"  # the shipped vocabulary contains "dog", "car" ...
    assert why["woman"] == "kind of person (WordNet)" and why["bulldog"] == "kind of dog (WordNet)"
    # Spread over the training categories, not six variations of one.
    assert len({n.nearest_train for n in novel}) >= 3


def test_embedding_cna_for_coco_proposes_no_example_from_the_issue(settings):
    """COCO panoptic's 133 classes, 100 proposals: none of the disguised training categories the issue
    found, no duplicates, and every proposal decided thing or stuff."""
    from dreammask.shared.vocabulary import coco_panoptic

    backend = EmbeddingAssociation.from_settings(settings)
    novel, dropped = backend.associate(list(coco_panoptic()[0]), 100, seed=0)
    names = [n.name for n in novel]
    assert len(names) == 100 == len({n.replace(" ", "") for n in names})
    found = {"hair dryer", "television receiver", "television set", "racquet", "cupboard", "windowpane", "notebook",
             "stove", "countertop", "stuffed toy", "doughnut", "canoe", "lamb", "armchair", "mug", "bulldog", "parrot",
             "grizzly", "suv", "motor scooter", "cargo ship", "bowling ball", "light bulb", "lightbulb", "telephone",
             "vegetable", "computer", "weapon"}
    assert not found & set(names)
    why = {d["name"]: d["reason"] for d in dropped}
    assert why["cupboard"] == "kind of cabinet-merged (WordNet)"
    assert why["telephone"] == "generalises cell phone (WordNet)"
    assert why["countertop"] == "part of counter (WordNet)"
    assert {n.isthing for n in novel} == {True, False}  # both things and stuff


def _request(idx, seed=3, max_objects=6):
    """Scene `idx` of a job with seed `seed`: the layout seed comes from the scene's seed, as in a plan."""
    return LayoutRequest(job_id="j1", scene_id=f"s{idx:05d}", scene_index=idx,
                         novel=NovelCategory(name="awning", nearest_train="building", score=0.5),
                         train=["person", "dog", "car", "building", "sky", "road", "cup", "bench"],
                         novel_names=["awning"], seed=stage_seed(scene_seed(seed, idx), SALTS["layout"]),
                         job_seed=seed, max_objects=max_objects, image_size=256)


def test_prior_layouts_are_reproducible_plausible_and_keep_the_novel_category(settings):
    sampler = PriorLayoutSampler.from_settings(settings)
    a = sampler.plan([_request(i) for i in range(8)])
    b = sampler.plan([_request(i) for i in range(8)])
    assert [x.model_dump() for x in a] == [x.model_dump() for x in b]
    assert a[0].model_dump() != a[1].model_dump()  # different scenes differ
    for layout in a:
        assert isinstance(layout, SceneLayout)
        novel = [o for o in layout.objects if o.is_novel]
        assert len(novel) == 1 and novel[0].category == "awning" and novel[0].area >= 0.04
        assert 2 <= len(layout.objects) <= 6
        things = [o for o in layout.objects if o.box[2] - o.box[0] < 0.99]
        for i, o in enumerate(things):
            for p in things[i + 1:]:
                assert _iou(o.box, p.box) <= 0.3 + 1e-9
        assert "awning" in layout.caption
    different_seed = sampler.plan([_request(0, seed=4)])[0]
    assert different_seed.model_dump() != a[0].model_dump()


def test_preview_renderer_draws_the_layout_reproducibly():
    layout = SceneLayout(job_id="j", scene_id="s00000", scene_index=0, novel_category="awning", caption="c",
                         objects=[LayoutObject(category="awning", box=[0.2, 0.3, 0.7, 0.8], is_novel=True)],
                         seed=0, backend="prior")
    r = PreviewRenderer()
    out1 = r.render([layout], [11], SynthesisParams(), 128)[0]
    out2 = r.render([layout], [11], SynthesisParams(), 128)[0]
    a1, a2 = np.asarray(out1.image), np.asarray(out2.image)
    assert a1.shape == (128, 128, 3) and np.array_equal(a1, a2)
    inside = a1[45:95, 35:85].astype(float).mean((0, 1))
    outside = a1[5:20, 5:20].astype(float).mean((0, 1))
    assert np.abs(inside - outside).sum() > 30  # the object stands out of the backdrop


def test_grabcut_segments_the_drawn_object_and_scores_rank_masks():
    img = np.full((96, 96, 3), 200, np.uint8)
    yy, xx = np.mgrid[:96, :96]
    disc = (yy - 48) ** 2 + (xx - 48) ** 2 <= 20 ** 2
    img[disc] = (200, 30, 30)
    box = np.array([[22, 22, 74, 74]], dtype=float)
    mask = GrabCutMasks().segment(img, box)[0].mask
    iou = (mask & disc).sum() / (mask | disc).sum()
    assert iou > 0.85
    scorer = GeometricScores()
    good, bad = scorer.score(img, [mask, np.zeros_like(mask)], np.vstack([box, box]), ["a", "a"], ["a"])
    assert 0 <= good["quality"] <= 1 and good["quality"] > 0.7
    assert bad["quality"] == 0.0
    ragged = np.zeros_like(mask)
    ragged[22:74:3, 22:74] = True
    assert scorer.score(img, [ragged], box, ["a"], ["a"])[0]["compactness"] < good["compactness"]
