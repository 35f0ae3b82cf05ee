"""Screening of candidate category names against the training set, shared by every CNA backend.

Rules, in order (the first that applies gives the dropped candidate its reason):
1. the same name as a training category, up to plural and spelling (`synonym of X (same name)`);
2. a compound whose last words are a training name (`kind of X`: "coffee cup" for "cup");
3. the lexical screen (lexical.py, WordNet): `synonym of X`, `kind of X`, `generalises X`, `part of X`;
4. sentence-embedding similarity to a training category at or above the synonym threshold
   (`synonym of X (embedding cosine 0.80)`): a safety net for names WordNet does not know;
5. names WordNet knows only as abstract nouns (`not a depictable object`);
6. duplicates of a kept candidate: same singular form, a shared WordNet synset, or embedding similarity
   at or above the dedup threshold (`duplicate of Y`).
The embedding similarity stays the relatedness score. Rules 3 and 5 run when the lexical screen is on
(DREAMMASK_CNA_LEXICAL_SCREEN, default on).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dreammask.shared.schemas import normalise_name


class Screened(NamedTuple):
    name: str
    nearest: str  # the most similar training category
    score: float  # cosine to it
    context: float  # mean cosine to the 3 most similar training categories: relatedness to the scenes
    isthing: bool | None  # None when the lexical screen is off
    depictable: float  # 1: first sense is a visible thing ... 0.25: unknown to WordNet; 1 when the screen is off


def _singular_forms(name: str, joined: bool = True) -> set[str]:
    """The name and its plausible singulars, for each of its "/"-separated alternatives (and, when
    joined, each written without spaces and hyphens)."""
    forms = set()
    for n in normalise_name(name).split("/"):
        n = n.strip()
        forms.add(n)
        if joined:
            forms.add(n.replace(" ", "").replace("-", ""))  # "light bulb", "light-bulb", "lightbulb"
        if n.endswith("ies"):
            forms.add(n[:-3] + "y")
        if n.endswith("es"):
            forms.add(n[:-2])
        if n.endswith("s"):
            forms.add(n[:-1])
    return forms


def _hypernym(name: str, train_tails: dict[tuple[str, ...], str]) -> str | None:
    for form in _singular_forms(name):
        words = tuple(form.split())
        for n in range(1, len(words)):
            if words[n:] in train_tails:
                return train_tails[words[n:]]
    return None


def lexical_screen_for(train: list[str], settings):
    """The WordNet screen for this training set, or None when settings turn it off."""
    if settings is not None and not getattr(settings, "cna_lexical_screen", True):
        return None
    from .lexical import LexicalScreen
    from .wordnet import get_wordnet

    return LexicalScreen(train, get_wordnet(getattr(settings, "cna_wordnet_dir", None)))


def screen_candidates(
    embedder,
    candidates: list[str],
    train: list[str],
    synonym_threshold: float,
    dedup_threshold: float,
    candidate_embeddings: np.ndarray | None = None,
    lexical=None,
) -> tuple[list[Screened], list[dict]]:
    """Drop training categories in disguise and duplicates among the candidates (see the module doc).

    Returns (kept, dropped): kept in input order, so the caller's ranking is preserved and a later
    candidate that duplicates an earlier one is the one dropped. `lexical` is a LexicalScreen for this
    training set (lexical_screen_for), or None for the embedding rules only.
    """
    if not candidates:
        return [], []
    train_norm = [normalise_name(t) for t in train]
    joined = lexical is not None  # screen off: the rules as they were before it
    train_forms = {f: t for t in train for f in _singular_forms(t, joined)}
    tr = embedder.encode(train_norm)
    cand = candidate_embeddings if candidate_embeddings is not None else embedder.encode(
        [normalise_name(c) for c in candidates]
    )
    sims = cand @ tr.T  # (n_cand, n_train)
    nearest = sims.argmax(1)
    best = sims.max(1)
    k = min(3, sims.shape[1])
    context = np.sort(sims, axis=1)[:, -k:].mean(1)

    # "coffee cup" is a kind of "cup": a name whose last words are a training name is a hyponym, not novel.
    train_tails = {tuple(f.split()): t for t in train for f in _singular_forms(t)}

    kept: list[Screened] = []
    kept_vecs: list[np.ndarray] = []
    kept_forms: dict[str, str] = {}
    kept_senses: dict[int, str] = {}
    dropped: list[dict] = []
    for i, name in enumerate(candidates):
        forms = _singular_forms(name, joined)
        same = next((train_forms[f] for f in forms if f in train_forms), None)
        if same is not None:
            dropped.append({"name": name, "reason": f"synonym of {same} (same name)"})
            continue
        hyper = _hypernym(name, train_tails)
        if hyper is not None:
            dropped.append({"name": name, "reason": f"kind of {hyper} (its name ends in it)"})
            continue
        if lexical is not None:
            why = lexical.training_relation(name)
            if why is not None:
                dropped.append({"name": name, "reason": f"{why} (WordNet)"})
                continue
        if best[i] >= synonym_threshold:
            dropped.append({"name": name,
                            "reason": f"synonym of {train[nearest[i]]} (embedding cosine {best[i]:.2f})"})
            continue
        if lexical is not None and lexical.is_abstract(name):
            dropped.append({"name": name, "reason": "not a depictable object (WordNet knows it only as abstract)"})
            continue
        dup = next((kept_forms[f] for f in forms if f in kept_forms), None)
        senses = lexical.sense_keys(name) if lexical is not None else frozenset()
        if dup is None:
            dup = next((kept_senses[s] for s in senses if s in kept_senses), None)
        if dup is not None:
            dropped.append({"name": name, "reason": f"duplicate of {dup}"})
            continue
        if kept_vecs:
            sim = np.stack(kept_vecs) @ cand[i]
            j = int(sim.argmax())
            if sim[j] >= dedup_threshold:
                dropped.append({"name": name, "reason": f"duplicate of {kept[j].name} (embedding cosine {sim[j]:.2f})"})
                continue
        kept.append(Screened(
            name, train[nearest[i]], float(best[i]), float(context[i]),
            lexical.isthing(name) if lexical is not None else None,
            lexical.depictable(name) if lexical is not None else 1.0,
        ))
        kept_vecs.append(cand[i])
        for f in forms:
            kept_forms.setdefault(f, name)
        for s in senses:
            kept_senses.setdefault(s, name)
    return kept, dropped
