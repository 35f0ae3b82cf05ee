"""Backends `llm`: category name association and layout planning with an LLM served over an
OpenAI-compatible API (vLLM's server in deployment; see docs/llm.md)."""

from __future__ import annotations

from typing import Any

from dreammask.services.association.llm.cna import associate
from dreammask.services.association.llm.engine import HTTPEngine
from dreammask.services.association.llm.layout import plan_layouts
from dreammask.services.association.settings import AssociationSettings
from dreammask.shared.backends import AssociationBackend, Failure, LayoutBackend, LayoutRequest
from dreammask.shared.schemas import NovelCategory, SceneLayout


class LLMAssociation(AssociationBackend):
    name = "llm"
    requires_gpu = False  # the GPU belongs to the LLM server, not to this worker
    requires_weights = False

    def __init__(self, core, settings: AssociationSettings, engine=None):
        self.core = core
        self.settings = settings
        self.engine = engine or HTTPEngine(settings)
        self._embedder = None

    @classmethod
    def from_settings(cls, settings) -> LLMAssociation:
        s = AssociationSettings.of(settings)
        return cls(s, s)

    @property
    def embedder(self):
        if self._embedder is None:
            from dreammask.services.association.embedding_model import get_text_embedder

            self._embedder = get_text_embedder(self.core)
        return self._embedder

    def warmup(self) -> None:
        _ = self.embedder  # load the screening model once, before the first job
        if self.core.cna_lexical_screen:
            from dreammask.services.association.wordnet import get_wordnet

            get_wordnet(self.core.cna_wordnet_dir)

    def associate(self, train: list[str], num_novel: int, *, seed: int) -> tuple[list[NovelCategory], list[dict]]:
        return associate(self.engine, self.settings, self.core, self.embedder, train, num_novel, seed, self.name)

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "backend": self.name,
            **self.engine.describe(),
            "rounds": s.cna_rounds,
            "min_support": s.cna_min_support,
            "temperature": s.cna_temperature,
        }

    def close(self) -> None:
        self.engine.close()


class LLMLayoutPlanner(LayoutBackend):
    name = "llm"
    # Enough scenes per message to keep the server's concurrency busy between batches.
    # Scenes per task: enough that a one-slot worker keeps the server busy across task boundaries (the
    # server idles only while the last requests of a batch finish and the next task starts).
    # bench/llm.py: 64 gave 0.83 of the ceiling with one slot, 128 gave 0.90 or more.
    preferred_batch_size = 128
    requires_gpu = False
    requires_weights = False

    def __init__(self, core, settings: AssociationSettings, engine=None):
        self.core = core
        self.settings = settings
        self.engine = engine or HTTPEngine(settings)
        self._prompts: dict = {}  # per-category prompts, reused by every batch of the category's scenes

    @classmethod
    def from_settings(cls, settings) -> LLMLayoutPlanner:
        s = AssociationSettings.of(settings)
        return cls(s, s)

    def plan(self, requests: list[LayoutRequest]) -> list[SceneLayout | Failure]:
        return plan_layouts(self.engine, self.settings, self.core, requests, self.name, self._prompts)

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {"backend": self.name, **self.engine.describe(), "exemplars": s.layout_exemplars,
                "temperature": s.layout_temperature}

    def close(self) -> None:
        self.engine.close()
