"""The WordNet lexical screen every CNA backend shares: each rule on written cases (the issue's examples
among them), thing/stuff decisions, the database reader, and the LLM backend's use of it before votes."""

from __future__ import annotations

import pytest
from llm_testdata import TRAIN

from dreammask.services.association.lexical import LexicalScreen, sense_overrides
from dreammask.services.association.wordnet import WordNet, get_wordnet
from dreammask.shared.vocabulary import coco_panoptic


@pytest.fixture(scope="module")
def wn():
    return get_wordnet()


@pytest.fixture(scope="module")
def coco(wn):
    return LexicalScreen(list(coco_panoptic()[0]), wn)


def test_reader_parses_wordnet_3_0(wn):
    assert len(wn.synsets) == 82115  # WordNet 3.0's noun synsets
    dog = wn.lookup("dog.n.01")
    assert dog.lexname == "animal" and "domestic_dog" in dog.lemmas
    assert wn.lookup("canine.n.02").offset in wn.ancestors(dog)
    assert [s.name for s in wn.senses("geese")][0] == "goose"  # noun.exc
    assert wn.senses("lightbulb")[0] is wn.senses("light bulb")[0]
    assert wn.lookup("lamb.n.02").instance  # Charles Lamb: a proper name, never a category


def test_missing_database_says_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="association extra.*DREAMMASK_CNA_WORDNET_DIR"):
        WordNet(tmp_path)


def test_every_sense_override_names_a_wordnet_synset(wn):
    for name, (keys, _) in sense_overrides().items():
        for key in keys:
            assert wn.lookup(key).lexname, f"{name}: {key}"


@pytest.mark.parametrize("name,why", [
    # synonyms and spelling variants of COCO classes
    ("hair dryer", "synonym of hair drier"), ("television receiver", "synonym of tv"),
    ("television set", "synonym of tv"), ("doughnut", "synonym of donut"), ("windowpane", "synonym of window-other"),
    # sub-types, including what COCO's labels cover beyond WordNet's own hyponyms
    ("canoe", "kind of boat"), ("lamb", "kind of sheep"), ("armchair", "kind of chair"), ("mug", "kind of cup"),
    ("bulldog", "kind of dog"), ("parrot", "kind of bird"), ("grizzly", "kind of bear"), ("suv", "kind of car"),
    ("motor scooter", "kind of motorcycle"), ("cargo ship", "kind of boat"), ("bowling ball", "kind of sports ball"),
    ("light bulb", "kind of light"), ("cupboard", "kind of cabinet-merged"), ("stove", "kind of oven"),
    ("notebook", "kind of laptop"), ("stuffed toy", "synonym of teddy bear"), ("beachball", "kind of sports ball"),
    ("cloud", "kind of sky-other-merged"), ("vegetable", "kind of food-other-merged"),
    # generalisations
    ("telephone", "generalises cell phone"), ("computer", "generalises laptop"), ("weapon", "generalises knife"),
    ("racquet", "generalises tennis racket"),
    # parts whose whole is clear
    ("countertop", "part of counter"), ("cockpit", "part of airplane"),
    # what COCO's labels cover beyond WordNet (senses.tsv)
    ("cooker", "kind of oven"), ("footpath", "kind of pavement-merged"), ("balcony", "kind of building-other-merged"),
    ("hoop", None),  # a generalisation of no training class
    # COCO-Stuff's light is "a source of illumination, especially a lamp (incl. ceiling lights)"
    ("table lamp", "kind of light"), ("chandelier", "kind of light"), ("lampshade", "part of light"),
    # COCO panoptic's merges and what its stuff labels cover
    ("cage", "kind of fence-merged"), ("fog", "kind of sky-other-merged"), ("quilt", "kind of blanket"),
])
def test_coco_rules(coco, name, why):
    assert coco.training_relation(name) == why


def test_parts_inherit_down_the_hierarchy(wn):
    """WordNet lists a windshield as part of a motor vehicle, a doorknob as part of an exterior door."""
    s = LexicalScreen(["car", "door", "bed"], wn)
    assert s.training_relation("windshield") == "part of car"
    assert s.training_relation("doorknob") == "part of door"
    assert s.training_relation("mattress") == "part of bed"


@pytest.mark.parametrize("name", ["awning", "leash", "saucer", "traffic cone", "bollard", "chopsticks", "crane",
                                  "broach", "chessboard", "seahorse", "harbor", "frog", "balloon"])
def test_coco_keeps_novel_names(coco, name):
    assert coco.training_relation(name) is None


def test_person_keeps_no_person_in_disguise(wn):
    s = LexicalScreen(["person"], wn)
    for name in ("woman", "girl", "man", "child", "baby"):
        assert s.training_relation(name) == "kind of person"
    for name in ("human face", "hand"):
        assert s.training_relation(name) == "part of person"
    for name in ("hat", "backpack", "umbrella"):
        assert s.training_relation(name) is None


def test_a_general_name_does_not_take_coco_merges_along(wn):
    """"grass-merged" covers every plant (COCO panoptic's merge); a plain "grass" does not."""
    assert LexicalScreen(["grass-merged"], wn).training_relation("weeds") == "kind of grass-merged"
    assert LexicalScreen(["grass"], wn).training_relation("weeds") is None
    lamp = LexicalScreen(["lamp"], wn)
    assert lamp.training_relation("lampshade") == "part of lamp"
    # senses.tsv pins "light" to light sources including lamps (COCO-Stuff's definition): one of its senses is lamp's
    assert lamp.training_relation("light") == "synonym of lamp"


def test_duplicates_share_a_sense_and_abstract_names_are_known(wn):
    s = LexicalScreen(["dog"], wn)
    assert s.sense_keys("light bulb") == s.sense_keys("lightbulb") != frozenset()
    assert s.sense_keys("doughnut") & s.sense_keys("donut")
    assert s.is_abstract("happiness") and s.is_abstract("freedom")
    assert not s.is_abstract("awning") and not s.is_abstract("flibbertigibbet")  # unknown is not abstract


def test_isthing_rule(coco):
    for name in ("sand", "gravel", "river", "sea", "mountain", "hill", "beach", "sky", "fog", "grass", "road",
                 "pavement", "floor", "wall", "dirt", "harbor"):
        assert coco.isthing(name) is False, name
    for name in ("awning", "leash", "frog", "traffic cone", "balloon", "bollard", "teapot"):
        assert coco.isthing(name) is True, name
    # Against COCO panoptic's own isthing column: every thing class reads as a thing, and the rule
    # gets most stuff classes (COCO files curtains, towels, banners... as stuff, which WordNet cannot know).
    names, things = coco_panoptic()
    assert all(coco.isthing(n) for n, t in zip(names, things) if t)
    stuff_ok = sum(not coco.isthing(n) for n, t in zip(names, things) if not t)
    assert stuff_ok >= 24, stuff_ok  # 24 of COCO's 53 stuff classes


# ------------------------------------------------------------------------ the LLM backend before its votes


def _reply(*items) -> dict:
    return {"reply_json": {"categories": [
        {"name": n, "related_to": r, "reason": f"{n} goes with {r}", "visual": True, **extra}
        for n, r, extra in items
    ]}}


def test_llm_rounds_are_screened_and_spellings_merged_before_votes(fake_llm, llm_association):
    rounds = [
        _reply(("light bulb", "building", {"isthing": True}), ("puppy", "dog", {}), ("awning", "building", {}),
               ("woman", "person", {}), ("beach", "person", {"isthing": False})),
        _reply(("lightbulb", "building", {"isthing": True}), ("puppies", "dog", {}), ("awning", "building", {}),
               ("beach", "person", {"isthing": False})),
        _reply(("light-bulb", "building", {}), ("leash", "dog", {}), ("beach", "person", {"isthing": True})),
    ]
    fake_llm.script({"task": "associate"}, rounds, repeat_last=True)
    kept, dropped = llm_association.associate(TRAIN, 5, seed=0)
    by_name = {c.name: c for c in kept}
    # Three spellings of one concept are one name with three votes (the first spelling seen names it;
    # the server answers the rounds concurrently, so which one that is may vary).
    bulbs = [c for c in kept if c.name in ("light bulb", "lightbulb", "light-bulb")]
    assert len(bulbs) == 1 and bulbs[0].support == 3
    assert by_name["awning"].support == 2 and by_name["beach"].support == 3
    why = {d["name"]: d["reason"] for d in dropped}
    assert why["puppy"] == "kind of dog (WordNet)"  # never counted as a vote
    assert why["woman"] == "kind of person (WordNet)"
    assert "self-consistency" in why["leash"]
    # isthing: the rounds' majority; the lexical rule where the model said nothing.
    assert by_name["beach"].isthing is False and bulbs[0].isthing is True
    assert by_name["awning"].isthing is True


def test_llm_schema_asks_for_isthing(fake_llm, llm_association):
    llm_association.associate(TRAIN, 3, seed=1)
    req = next(r for r in fake_llm.requests if r["task"] == "associate")
    assert '"isthing"' in req["messages"][1]["content"]
