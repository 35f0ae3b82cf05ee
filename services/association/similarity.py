"""Screening of candidate category names against the training set, shared by every CNA backend."""

from __future__ import annotations

import numpy as np

from dreammask.shared.schemas import normalise_name


def _singular_forms(name: str) -> set[str]:
    """The name and its plausible singulars, for each of its "/"-separated alternatives."""
    forms = set()
    for n in normalise_name(name).split("/"):
        n = n.strip()
        forms.add(n)
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


def screen_candidates(
    embedder,
    candidates: list[str],
    train: list[str],
    synonym_threshold: float,
    dedup_threshold: float,
    candidate_embeddings: np.ndarray | None = None,
) -> tuple[list[tuple[str, str, float]], list[dict]]:
    """Drop members and near-synonyms of the training set, and near-duplicates among the candidates.

    Returns (kept, dropped): kept is [(name, nearest training category, cosine)] in input order, so the
    caller's ranking is preserved and a later candidate that duplicates an earlier one is the one dropped.
    """
    if not candidates:
        return [], []
    train_norm = [normalise_name(t) for t in train]
    train_forms = set().union(*(_singular_forms(t) for t in train))
    tr = embedder.encode(train_norm)
    cand = candidate_embeddings if candidate_embeddings is not None else embedder.encode(
        [normalise_name(c) for c in candidates]
    )
    sims = cand @ tr.T  # (n_cand, n_train)
    nearest = sims.argmax(1)
    best = sims.max(1)

    # "coffee cup" is a kind of "cup": a name whose last words are a training name is a hyponym, not novel.
    train_tails = {tuple(f.split()): t for t in train for f in _singular_forms(t)}

    kept: list[tuple[str, str, float]] = []
    kept_vecs: list[np.ndarray] = []
    kept_forms: set[str] = set()
    dropped: list[dict] = []
    for i, name in enumerate(candidates):
        forms = _singular_forms(name)
        if forms & train_forms:
            dropped.append({"name": name, "reason": "member of the training categories"})
            continue
        hyper = _hypernym(name, train_tails)
        if hyper is not None:
            dropped.append({"name": name, "reason": f"a kind of training category {hyper!r}"})
            continue
        if best[i] >= synonym_threshold:
            dropped.append({
                "name": name,
                "reason": f"near-synonym of training category {train[nearest[i]]!r} (cosine {best[i]:.2f})",
            })
            continue
        if forms & kept_forms:
            dropped.append({"name": name, "reason": "duplicate of a kept candidate"})
            continue
        if kept_vecs:
            dup = np.stack(kept_vecs) @ cand[i]
            j = int(dup.argmax())
            if dup[j] >= dedup_threshold:
                dropped.append({"name": name, "reason": f"near-duplicate of {kept[j][0]!r} (cosine {dup[j]:.2f})"})
                continue
        kept.append((name, train[nearest[i]], float(best[i])))
        kept_vecs.append(cand[i])
        kept_forms |= forms
    return kept, dropped
