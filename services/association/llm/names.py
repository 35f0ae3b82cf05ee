"""Normalisation of category names proposed by an LLM: lower case, singular noun phrase, sane length.

The singulariser is rule based on purpose: names are short noun phrases and only their head noun is
inflected, so a handful of suffix rules plus the common irregular nouns cover what LLMs actually write;
a wrong singular only costs a duplicate that the embedding screen then catches.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from dreammask.shared.schemas import check_category_name, normalise_name

_IRREGULAR = {
    "men": "man", "women": "woman", "children": "child", "people": "person", "feet": "foot",
    "teeth": "tooth", "geese": "goose", "mice": "mouse", "lice": "louse", "oxen": "ox",
    "knives": "knife", "wives": "wife", "lives": "life", "leaves": "leaf", "loaves": "loaf",
    "shelves": "shelf", "wolves": "wolf", "calves": "calf", "halves": "half", "scarves": "scarf",
    "thieves": "thief", "sheaves": "sheaf", "elves": "elf", "hooves": "hoof", "wharves": "wharf",
    "cacti": "cactus", "fungi": "fungus", "octopi": "octopus", "radii": "radius", "stimuli": "stimulus",
    "criteria": "criterion", "phenomena": "phenomenon", "indices": "index", "matrices": "matrix",
    "vertices": "vertex", "appendices": "appendix", "axes": "axe", "oases": "oasis", "bases": "base",
    "geckos": "gecko", "buses": "bus", "minibuses": "minibus", "trolleybuses": "trolleybus",
    "gases": "gas", "canvases": "canvas", "lenses": "lens", "atlases": "atlas", "irises": "iris",
    "cactuses": "cactus", "octopuses": "octopus", "walruses": "walrus", "circuses": "circus",
    "campuses": "campus", "abacuses": "abacus", "hippopotamuses": "hippopotamus", "platypuses": "platypus",
    "rhinoceroses": "rhinoceros", "trellises": "trellis", "tortoises": "tortoise", "pelvises": "pelvis",
}
# Singular (or uncountable) words that end in "s" and must stay as they are.
_INVARIANT = {
    "glasses", "sunglasses", "eyeglasses", "scissors", "pants", "trousers", "jeans", "shorts", "tights",
    "binoculars", "pliers", "tongs", "tweezers", "goggles", "headphones", "earphones", "earbuds",
    "species", "series", "news", "means", "physics", "gymnastics", "athletics", "billiards", "darts",
    "lens", "gas", "atlas", "canvas", "pancreas", "chassis", "tennis", "rhinoceros", "cosmos", "bus",
    "minibus", "trolleybus", "iris", "trellis", "hummus", "couscous", "asparagus", "hibiscus", "citrus",
    "octopus", "cactus", "walrus", "platypus", "abacus", "circus", "campus", "papyrus", "nautilus",
    "hippopotamus", "christmas", "sheep", "deer", "fish", "moose", "bison", "aircraft",
    "swiss", "mattress", "dress", "glass", "grass", "compass", "harness", "cypress", "chess",
    "boss", "moss", "bass", "press", "cross", "brass", "address", "fortress", "princess", "lioness",
    "tortoise", "pelvis", "oasis", "bermudas", "overalls", "pajamas", "pyjamas", "leggings", "suspenders",
    "clothes", "stairs", "dominoes", "crossroads", "barracks", "headquarters", "gallows", "premises",
    "measles", "mumps", "lycra", "kudos", "yes",
}
# "-ie" nouns whose plural ends in "-ies" but whose singular is not "-y".
_IE_WORDS = {
    "cookie", "movie", "brownie", "smoothie", "rookie", "hoodie", "selfie", "zombie", "calorie", "collie",
    "beanie", "pie", "tie", "bowtie", "necktie", "lingerie", "prairie", "genie", "pixie", "goalie",
    "birdie", "magpie", "sortie", "boogie", "walkie", "talkie", "auntie", "budgie", "eyrie", "potpie",
}
_O_ES = {"shoe", "toe", "hoe", "canoe", "oboe", "horseshoe", "tiptoe", "floe", "snowshoe", "mistletoe"}

# Proposals that are not visual, physical things even when a model flags them as such.
_ABSTRACT = {
    "idea", "concept", "emotion", "feeling", "happiness", "sadness", "love", "time", "music", "sound",
    "noise", "smell", "odor", "taste", "silence", "memory", "dream", "thought", "freedom", "peace",
    "weather", "climate", "temperature", "season", "atmosphere", "mood", "ambience", "ambiance",
    "culture", "tradition", "history", "knowledge", "information", "data", "justice", "beauty",
    "danger", "safety", "comfort", "speed", "energy", "gravity", "electricity", "wifi", "internet",
    "software", "password", "price", "cost", "tax", "law", "rule", "game rule", "score", "language",
    "relaxation", "leisure", "fun", "luck", "fear", "anger", "joy", "hope", "faith", "wisdom",
    "activity", "event", "lifestyle", "experience", "service", "health", "wealth", "poverty",
}
_DRINKING = {"wine", "drinking", "shot", "beer", "water", "champagne", "martini", "cocktail", "juice"}
_ABSTRACT_SUFFIXES = ("ness", "ship", "hood", "ism", "itude")
_ABSTRACT_KEEP = {"harness", "witness", "prism", "ship", "spaceship", "airship", "warship", "hood"}


def _singular_word(w: str) -> str:
    if len(w) <= 3 or w in _INVARIANT:
        return w
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    for plural, singular in _IRREGULAR.items():
        # compounds written as one word: "bookshelves", "schoolchildren", "firemen"
        if len(plural) >= 4 and w.endswith(plural) and plural in ("shelves", "children", "knives", "leaves", "women", "wolves", "buses"):
            return w[: -len(plural)] + singular
    if w.endswith("men") and len(w) > 4 and w not in ("abdomen", "specimen", "semen", "stamen", "omen"):
        return w[:-3] + "man"  # firemen, policemen, snowmen
    if w.endswith("ies"):
        stem_ie = w[:-1]
        if stem_ie in _IE_WORDS or len(w) <= 4:
            return stem_ie
        return w[:-3] + "y"
    if w.endswith("oes"):
        return w[:-1] if w[:-1] in _O_ES or w.endswith(("shoes", "canoes")) else w[:-2]
    if w.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return w[:-2]
    if w.endswith(("ss", "us", "is", "ous")):
        return w
    if w.endswith("s") and not w.endswith("'s"):
        return w[:-1]
    return w


@lru_cache(maxsize=16384)
def canonical(name: str) -> str:
    """The key two spellings of one category share: normalised, head noun singular."""
    return singularise(normalise_name(name))


def singularise(phrase: str) -> str:
    """Singular form of a lower-case noun phrase: the head noun changes ("pairs of shoes" -> "pair of
    shoes", "traffic cones" -> "traffic cone")."""
    words = phrase.split(" ")
    if not words or not words[-1]:
        return phrase
    head = words.index("of") - 1 if "of" in words[1:] else len(words) - 1
    if head < 0:
        return phrase
    # Hyphenated compounds inflect their last part ("t-shirts" -> "t-shirt").
    parts = words[head].split("-")
    if " ".join(words) in _INVARIANT:
        return phrase
    if parts[-1] == "glasses" and head > 0 and words[head - 1] in _DRINKING:
        parts[-1] = "glass"  # "wine glasses" are glasses to drink from, not eyewear
        words[head] = "-".join(parts)
        return " ".join(words)
    parts[-1] = _singular_word(parts[-1])
    words[head] = "-".join(parts)
    return " ".join(words)


_ARTICLE = re.compile(r"^(a|an|the|some|many|several)\s+")
_TRAILING_PUNCT = re.compile(r"[\s.,;:!?]+$")


def clean_llm_name(raw: object, max_length: int = 64, max_words: int = 4) -> str:
    """The canonical form of one name from an LLM (lower case, no article, singular); raises ValueError
    with what is wrong, for the `dropped` list."""
    if not isinstance(raw, str):
        raise ValueError("not a string")
    if len(raw) > 4 * max_length:  # never run the checks below on megabytes
        raise ValueError(f"{len(raw)} characters long (limit {max_length})")
    name = unicodedata.normalize("NFKC", raw).strip().strip("\"'`*")
    name = _TRAILING_PUNCT.sub("", name.lower())
    name = _ARTICLE.sub("", name)
    name = check_category_name(name, max_length=max_length)
    name = " ".join(name.replace("_", " ").split())
    if not any(ch.isalpha() for ch in name):
        raise ValueError("has no letters")
    n_words = len(name.split())
    if n_words > max_words:
        raise ValueError(f"{n_words} words; a category name is a short noun phrase (at most {max_words} words)")
    return singularise(name)


def is_abstract(name: str) -> bool:
    """True for names that are clearly not visual, physical things (a small lexicon, not a classifier)."""
    n = normalise_name(name)
    head = n.split(" ")[-1] if n else n
    if n in _ABSTRACT or head in _ABSTRACT:
        return True
    return head not in _ABSTRACT_KEEP and head.endswith(_ABSTRACT_SUFFIXES) and len(head) > 6
