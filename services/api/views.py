"""Response models of the routes that list or browse (so the OpenAPI document types them), and the request
examples shown in /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from dreammask.shared.schemas import CategorySet, DatasetManifest, JobView


class Page(BaseModel):
    total: int = Field(..., description="items matching, over all pages")
    limit: int
    offset: int


class JobList(Page):
    items: list[JobView]


class ResumeResult(BaseModel):
    job: JobView
    enqueued: dict[str, int] = Field(..., description="messages re-enqueued per stage")


SceneStage = Literal["done", "failed", "pending"]


class SceneInstance(BaseModel):
    instance_id: int
    category: str
    is_novel: bool
    bbox: list[float]
    area: float
    scores: dict[str, float]


class SceneView(BaseModel):
    scene_id: str
    novel_category: str | None
    caption: str | None
    stages: dict[str, SceneStage] = Field(..., description="every per-scene stage of the chain, in order: "
                                                       "'done', 'failed' or 'pending'")
    failed: dict[str, Any] | None = Field(None, description="stage, reason and time of the scene's failure")
    image_url: str | None
    layout_url: str | None
    annotation_url: str | None
    instances: list[SceneInstance]


class SceneList(Page):
    items: list[SceneView]


class CategoriesView(CategorySet):
    """categories.json as the API shows it: `dropped` only with `?include=dropped`, its size always."""

    dropped: list[dict[str, Any]] | None = None
    dropped_count: int = 0


class DatasetFile(BaseModel):
    path: str = Field(..., description="path inside the dataset; the manifest's checksums use the same key")
    url: str = Field(..., description="presigned storage URL, or the API's /files route (needs the API key)")
    presigned: bool
    size: int | None = Field(None, description="bytes")


class DatasetView(BaseModel):
    manifest: DatasetManifest
    files: list[DatasetFile]


class MetricsLines(BaseModel):
    items: list[dict[str, Any]] = Field(..., description="metrics.jsonl lines: losses per logged iteration, evals")
    total: int


JOB_SPEC_EXAMPLES = {
    "own categories": {
        "summary": "your own training categories, embedded backends",
        "value": {"name": "street scenes", "train_categories": ["person", "car", "building", "road", "sky"],
                  "num_novel": 5, "images_per_category": 4, "image_size": 512, "seed": 0},
    },
    "preset, production backends": {
        "summary": "COCO panoptic's 133 categories, GPU backends (where deployed)",
        "value": {"preset": "coco_panoptic", "num_novel": 20, "images_per_category": 50, "image_size": 512,
                  "backends": {"association": "llm", "layout": "llm", "synthesis": "gligen", "masks": "sam",
                               "scores": "clip"},
                  "thresholds": {"score_metric": "auto", "min_score": 0.3},
                  "synthesis": {"steps": 30, "guidance_scale": 7.5}},
    },
}

TRAINING_SPEC_EXAMPLES = {
    "tiny": {
        "summary": "the tiny random model on a curated dataset (demos, smoke tests)",
        "value": {"name": "smoke test", "datasets": ["ds-job-20260101-000000-abcdef"], "iterations": 20,
                  "tiny": True},
    },
    "DreamMask IAT": {
        "summary": "FC-CLIP ConvNeXt-L with SRA on COCO panoptic plus curated synthetic data",
        "value": {"datasets": ["ds-job-20260101-000000-abcdef"], "real_datasets": ["coco_2017_train_panoptic"],
                  "eval_datasets": ["coco_2017_val_panoptic"], "config": "dreammask_convnext_large.yaml",
                  "iterations": 90000, "overrides": {"SOLVER.BASE_LR": 0.0001}},
    },
}

LOOP_SPEC_EXAMPLES = {
    "toy world": {
        "summary": "the toy world on a CPU: tiny model, embedded backends (docs/loop.md)",
        "value": {"name": "toy loop", "train_categories": ["sky", "grass", "cat", "table"],
                  "target": ["kite", "awning", "lamp", "bench", "ball"], "rounds": 2, "images_per_round": 20,
                  "real_datasets": ["toy_world_train"], "eval_dataset": "toy_world_val",
                  "job": {"image_size": 64}, "training": {"iterations": 100, "base_iterations": 200, "tiny": True}},
    },
    "from a checkpoint": {
        "summary": "start from a training's checkpoint; floor and target IoU set",
        "value": {"train_categories": ["sky", "grass", "cat", "table"], "target": ["kite", "awning"],
                  "rounds": 3, "images_per_round": 40, "floor": 0.1, "target_iou": 80,
                  "real_datasets": ["toy_world_train"], "eval_dataset": "toy_world_val",
                  "weights": "tr-0123456789ab", "training": {"iterations": 200, "tiny": True}},
    },
}
