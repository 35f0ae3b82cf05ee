"""The one interface per stage that every backend implements.

A backend declares what it needs (`requires_gpu`, `requires_weights`), builds itself from settings
(`from_settings`, where it loads its models once), and does batched work. Results per item are either a
value or a `Failure` with a reason, so one bad scene never sinks its batch; an exception fails the whole
batch (the task then retries with backoff).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .schemas import LayoutObject, NovelCategory, SceneLayout, SynthesisParams


@dataclass
class Failure:
    reason: str


class Backend(ABC):
    name: ClassVar[str] = ""
    stage: ClassVar[str] = ""
    requires_gpu: ClassVar[bool] = False
    requires_weights: ClassVar[bool] = False
    # Scenes per task message this backend works best with (0: the deployment's batch size setting).
    # A remote LLM wants many requests in flight; a GPU wants a full batch.
    preferred_batch_size: ClassVar[int] = 0

    @classmethod
    def from_settings(cls, settings) -> Backend:
        return cls()

    def warmup(self) -> None:
        """Run once after loading (compile kernels, fill caches)."""

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        """Release models and device memory."""

    def describe(self) -> dict[str, Any]:
        """Provenance recorded with each output (model path, revision, dtype ...)."""
        return {"backend": self.name}

    def weight_files(self) -> tuple[list[str], str | None]:
        """The weight files this backend loaded and the folder to name them from (provenance: their SHA-256
        is recorded with each output, `shared/provenance.py`). None loaded: ([], None)."""
        return [], None


# ------------------------------------------------------------------ association (CNA)

class AssociationBackend(Backend):
    stage = "association"

    @abstractmethod
    def associate(self, train: list[str], num_novel: int, *, seed: int) -> tuple[list[NovelCategory], list[dict]]:
        """Propose up to `num_novel` novel categories related to `train`; returns (kept, dropped),
        each dropped entry {"name": ..., "reason": ...}."""


# ------------------------------------------------------------------ layout

@dataclass
class LayoutRequest:
    """One scene to lay out. `seed` is the scene's layout seed (from the job's plan): a backend draws this
    scene's randomness from it alone, so the scene plans the same in any batch. `job_seed` seeds choices a
    backend shares across scenes (e.g. the LLM's exemplars for a category)."""

    job_id: str
    scene_id: str
    scene_index: int
    novel: NovelCategory
    train: list[str]
    novel_names: list[str]
    seed: int
    max_objects: int
    image_size: int
    job_seed: int = 0


class LayoutBackend(Backend):
    stage = "layout"

    @abstractmethod
    def plan(self, requests: list[LayoutRequest]) -> list[SceneLayout | Failure]:
        """One layout (or a Failure with its reason) per request, in order."""


# ------------------------------------------------------------------ layout-to-image

@dataclass
class RenderOutput:
    image: Any  # PIL.Image.Image, RGB, size (image_size, image_size)
    dropped: list[LayoutObject] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # params actually used (steps, scheduler, ...)


class RenderBackend(Backend):
    stage = "synthesis"

    @abstractmethod
    def render(
        self, layouts: list[SceneLayout], seeds: list[int], params: SynthesisParams, image_size: int
    ) -> list[RenderOutput | Failure]:
        """Render each layout with its own seed; the same (layout, seed) renders the same image
        whether it comes alone or in a batch."""


# ------------------------------------------------------------------ masks and scores

@dataclass
class MaskResult:
    mask: np.ndarray  # bool (H, W)
    scores: dict[str, float] = field(default_factory=dict)  # e.g. pred_iou, stability


class MaskBackend(Backend):
    stage = "masks"

    @abstractmethod
    def segment(self, image: np.ndarray, boxes: np.ndarray) -> list[MaskResult]:
        """image: uint8 (H, W, 3) RGB; boxes: float (N, 4) pixel [x0, y0, x1, y1]. One mask per box."""


class ScoreBackend(Backend):
    stage = "scores"

    @abstractmethod
    def score(
        self,
        image: np.ndarray,
        masks: list[np.ndarray],
        boxes: np.ndarray,
        targets: list[str],
        vocabulary: list[str],
    ) -> list[dict[str, float]]:
        """Scores per instance. Geometric backends give "quality" in [0, 1]; CLIP backends give
        "clip_cosine", "clip_prob" (softmax over the vocabulary) and "clip_rank" (1 = best)."""
