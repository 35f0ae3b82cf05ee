"""Versioned wire and storage schemas. Every object the platform stores is one of these, as JSON.

`schema_version` is written into each object; readers accept the versions they know.
Boxes are normalised `[x0, y0, x1, y1]` in layouts and pixels `[x0, y0, x1, y1]` in annotations
(COCO exports convert to `[x, y, w, h]`).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .formats import EXPORTERS

SCHEMA_VERSION = 1

# Letters of any script, digits, spaces and a little punctuation seen in real category lists
# ("wall-other-merged", "potted plant", "t-shirt", "salt & pepper", "hair drier").
_NAME_RE = re.compile(r"^[\w][\w .,'&()/+-]*$", re.UNICODE)
HARD_NAME_LIMIT = 128


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def check_category_name(name: str, max_length: int = HARD_NAME_LIMIT) -> str:
    """Validate one category name from an untrusted source; returns it stripped. Raises ValueError."""
    if not isinstance(name, str):
        raise ValueError("a category name must be a string")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in name):
        raise ValueError("a category name holds a lone UTF-16 surrogate; send valid Unicode text")
    # Compatibility forms (fullwidth "ｄｏｇ", decomposed "café") become the one canonical spelling.
    name = unicodedata.normalize("NFKC", name)
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in name):
        raise ValueError(f"category name {name[:40]!r} contains control or invisible characters; remove them")
    name = " ".join(name.split())
    if not name:
        raise ValueError("category names must not be empty")
    if len(name) > max_length:
        raise ValueError(f"category name {name[:40]!r}... is {len(name)} characters; the limit is {max_length}")
    if not _NAME_RE.match(name):
        raise ValueError(
            f"category name {name!r} has characters outside letters, digits, spaces and .,'&()/+-"
        )
    scripts = sorted({_script(ch) for ch in name if ch.isalpha()} & _CONFUSABLE_SCRIPTS)
    if len(scripts) > 1:
        raise ValueError(
            f"category name {name!r} mixes {' and '.join(s.title() for s in scripts)} letters, which look alike "
            f"(e.g. a Cyrillic 'о' in 'dоg'); write each name in one script"
        )
    return name


# Scripts whose letters are easily mistaken for one another; mixing them in one name is refused.
_CONFUSABLE_SCRIPTS = {"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE"}


def _script(ch: str) -> str:
    return unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]


def normalise_name(name: str) -> str:
    """Canonical form used to compare names: lower case, single spaces, COCO's '-merged/-other/-stuff' cut."""
    n = " ".join(name.lower().replace("_", " ").split())
    for suffix in ("-other-merged", "-merged", "-other", "-stuff"):
        if n.endswith(suffix):
            n = n[: -len(suffix)]
    return n.replace("-", " ").strip()


def check_category_list(names: list[str]) -> list[str]:
    """Each name checked (`check_category_name`), and none repeated under `normalise_name`; errors name the
    item's index, as a list field's validator reports them."""
    cleaned, seen = [], {}
    for i, name in enumerate(names):
        try:
            name = check_category_name(name)
        except ValueError as e:
            raise ValueError(f"item {i}: {e}") from None
        key = normalise_name(name)
        if key in seen:
            raise ValueError(f"item {i}: {name!r} duplicates item {seen[key]}; list each category once")
        seen[key] = i
        cleaned.append(name)
    return cleaned


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Versioned(Model):
    schema_version: int = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} is newer than this build understands ({SCHEMA_VERSION})")
        return v


# ---------------------------------------------------------------- job spec

class JobState(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


class Backends(Model):
    """Backend per stage, by registry name. The embedded defaults need no weights and no GPU."""

    association: str = "embedding"
    layout: str = "prior"
    synthesis: str = "preview"
    masks: str = "grabcut"
    scores: str = "geometric"


class Thresholds(Model):
    """Selection thresholds used by curation (see docs/annotation.md for what each score means)."""

    # Which instance score the selection reads: "auto" takes the CLIP probability when a CLIP score
    # backend ran, else the geometric quality.
    score_metric: Literal["auto", "quality", "clip_prob", "clip_cosine"] = "auto"
    min_score: float = Field(0.3, ge=0.0, le=1.0)
    min_pred_iou: float = Field(0.0, ge=0.0, le=1.0)
    min_stability: float = Field(0.0, ge=0.0, le=1.0)
    min_area_frac: float = Field(0.001, ge=0.0, le=1.0)
    max_area_frac: float = Field(0.95, ge=0.0, le=1.0)
    # An image is kept when its novel-category instance passes and at least this share of its instances do.
    min_kept_fraction: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _area_range(self) -> Thresholds:
        if self.min_area_frac > self.max_area_frac:
            raise ValueError("min_area_frac must not exceed max_area_frac")
        return self


class SynthesisParams(Model):
    steps: int = Field(30, ge=1, le=200)
    guidance_scale: float = Field(7.5, ge=0.0, le=30.0)
    gligen_scheduled_sampling_beta: float = Field(0.3, ge=0.0, le=1.0)
    scheduler: Literal["default", "ddim", "dpm", "euler", "pndm"] = "default"
    negative_prompt: str = Field(
        "low quality, blurry, distorted, deformed, watermark, text", max_length=500
    )


# Dataset export formats, as declared in shared/formats.py (the curation service's exporters); a job names
# the ones it wants in `exports`, all by default.
EXPORT_FORMATS = tuple(EXPORTERS)
ExportFormat = Literal[EXPORT_FORMATS]  # type: ignore[valid-type]  # the declared names, as an enum


class JobSpec(Versioned):
    """What a client posts to `POST /v1/jobs`. The format of every field is checked here (pydantic, at the
    API); the deployment's limits once, at submission (`JobLimits.violations`)."""

    name: str | None = Field(None, max_length=200)
    preset: Literal["coco_panoptic"] | None = None
    train_categories: list[str] | None = None
    num_novel: int = Field(5, ge=1, le=10_000)
    images_per_category: int = Field(4, ge=1, le=10_000)
    image_size: int = Field(512, ge=64, le=4096)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    max_objects_per_scene: int = Field(6, ge=1, le=30)
    backends: Backends = Field(default_factory=Backends)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    synthesis: SynthesisParams = Field(default_factory=SynthesisParams)
    # Dataset formats to write (None: all of EXPORT_FORMATS); the card is always written.
    exports: list[ExportFormat] | None = None
    # The categories to render and how many images of each, instead of num_novel and images_per_category:
    # association proposes nothing and the plan renders these (the closed loop's jobs, docs/loop.md).
    category_budget: dict[str, int] | None = Field(
        None, description='e.g. {"awning": 12, "stairway": 3}: images per novel category, in this order')

    @field_validator("exports")
    @classmethod
    def _exports(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("list each export format once")
        return v

    @property
    def export_formats(self) -> list[str]:
        chosen = set(self.exports if self.exports is not None else EXPORT_FORMATS) | {"card"}
        return [f for f in EXPORT_FORMATS if f in chosen]

    @field_validator("category_budget")
    @classmethod
    def _budget(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("give at least one category with its image count, or leave category_budget out")
        out, seen = {}, {}
        for name, count in v.items():
            try:
                clean = check_category_name(name)
            except ValueError as e:
                raise ValueError(f"{name[:40]!r}: {e}") from None
            key = normalise_name(clean)
            if key in seen:
                raise ValueError(f"{clean!r} duplicates {seen[key]!r}; list each category once")
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
                raise ValueError(f"{clean!r}: the image count must be an integer from 1 to 10000, not {count!r}")
            seen[key] = clean
            out[clean] = count
        return out

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and any(unicodedata.category(ch) in ("Cc", "Cs") for ch in v):
            raise ValueError("the job name contains control characters; remove them")
        return v

    @field_validator("train_categories")
    @classmethod
    def _categories(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("give at least one training category, or a preset")
        return check_category_list(v)

    @field_validator("image_size")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError("image_size must be a multiple of 8 (latent diffusion works on 1/8 resolution)")
        return v

    @model_validator(mode="after")
    def _categories_or_preset(self) -> JobSpec:
        if self.train_categories is None and self.preset is None:
            raise ValueError("give train_categories or a preset (e.g. 'coco_panoptic')")
        if self.train_categories is not None and self.preset is not None:
            raise ValueError("give train_categories or a preset, not both")
        if self.category_budget is not None:
            train = {normalise_name(t) for t in self.train_categories or []}
            clash = [n for n in self.category_budget if normalise_name(n) in train]
            if clash:
                raise ValueError(f"category_budget: {clash[0]!r} is a training category; the budget lists novel "
                                 "categories to render")
        return self

    @property
    def novel_asked(self) -> int:
        """The novel categories asked for: the budget's, else num_novel."""
        return len(self.category_budget) if self.category_budget is not None else self.num_novel

    @property
    def num_scenes(self) -> int:
        """The scenes asked for: an upper bound until association finds the novel categories (the job's plan
        then holds the scenes it makes, `JobPlan.scenes`); exactly the budget's total with a budget."""
        if self.category_budget is not None:
            return sum(self.category_budget.values())
        return self.num_novel * self.images_per_category


class JobLimits(Model):
    """This deployment's limits on a job (the `DREAMMASK_MAX_*` settings, `Settings.job_limits()`): checked once,
    at submission, with a 422 that names the limit; recorded with the job (`StoredJobSpec.limits`) and in its
    plan, so every stage and a later re-render know what was in force."""

    max_train_categories: int
    max_novel_categories: int
    max_scenes_per_job: int
    max_category_name_length: int
    max_image_size: int
    min_synthesis_steps: int
    max_synthesis_steps: int
    max_guidance_scale: float

    def violations(self, spec: JobSpec, train: list[str]) -> list[tuple[tuple[str | int, ...], str]]:
        """Every limit the job breaks, as (location in the spec, message naming the limit); [] when none."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        if len(train) > self.max_train_categories:
            out.append((("train_categories",), f"{len(train)} categories; this deployment accepts at most "
                        f"{self.max_train_categories} ({_env('max_train_categories')})"))
        for i, name in enumerate(spec.train_categories or []):
            if len(name) > self.max_category_name_length:
                out.append((("train_categories", i), f"name is {len(name)} characters; the limit is "
                            f"{self.max_category_name_length} ({_env('max_category_name_length')})"))
        if spec.category_budget is not None:
            out += self._budget_violations(spec.category_budget, train)
        elif spec.num_novel > self.max_novel_categories:
            out.append((("num_novel",), f"{spec.num_novel} novel categories; this deployment accepts at most "
                        f"{self.max_novel_categories} per job ({_env('max_novel_categories')})"))
        if spec.category_budget is not None and spec.num_scenes > self.max_scenes_per_job:
            out.append((("category_budget",), f"{spec.num_scenes} images in all; this deployment accepts at most "
                        f"{self.max_scenes_per_job} per job ({_env('max_scenes_per_job')})"))
        elif spec.num_scenes > self.max_scenes_per_job:
            # A limit on the product of two fields: reported on the job as a whole, naming both.
            out.append(((), f"num_novel × images_per_category = {spec.num_novel} × {spec.images_per_category} = "
                        f"{spec.num_scenes} scenes; this deployment accepts at most {self.max_scenes_per_job} per "
                        f"job ({_env('max_scenes_per_job')}): lower num_novel or images_per_category"))
        out += self.render_violations(spec.synthesis, spec.image_size)
        return out

    def _budget_violations(self, budget: dict[str, int], train: list[str]) -> list[tuple[tuple[str | int, ...], str]]:
        out: list[tuple[tuple[str | int, ...], str]] = []
        if len(budget) > self.max_novel_categories:
            out.append((("category_budget",), f"{len(budget)} categories; this deployment accepts at most "
                        f"{self.max_novel_categories} novel categories per job ({_env('max_novel_categories')})"))
        known = {normalise_name(t) for t in train}
        for name in budget:
            if len(name) > self.max_category_name_length:
                out.append((("category_budget", name), f"name is {len(name)} characters; the limit is "
                            f"{self.max_category_name_length} ({_env('max_category_name_length')})"))
            if normalise_name(name) in known:  # a preset's categories are known only here
                out.append((("category_budget", name), "is a training category; the budget lists novel "
                            "categories to render"))
        return out

    def render_violations(self, params: SynthesisParams, image_size: int) -> list[tuple[tuple[str, ...], str]]:
        """The limits a render breaks (a job's, or a re-render's overrides of steps, guidance and size)."""
        out: list[tuple[tuple[str, ...], str]] = []
        if image_size > self.max_image_size:
            out.append((("image_size",), f"{image_size} pixels; this deployment renders at most "
                        f"{self.max_image_size} ({_env('max_image_size')})"))
        if not self.min_synthesis_steps <= params.steps <= self.max_synthesis_steps:
            out.append((("synthesis", "steps"), f"{params.steps} steps; this deployment renders with "
                        f"{self.min_synthesis_steps} to {self.max_synthesis_steps} "
                        f"({_env('min_synthesis_steps')}, {_env('max_synthesis_steps')})"))
        if params.guidance_scale > self.max_guidance_scale:
            out.append((("synthesis", "guidance_scale"), f"{params.guidance_scale}; this deployment's limit is "
                        f"{self.max_guidance_scale} ({_env('max_guidance_scale')})"))
        return out


def _env(field: str) -> str:
    return f"DREAMMASK_{field.upper()}"


class RerenderOrigin(Model):
    """What a re-render job renders again: a sample of another job, with the render seed to use (the origin's
    unless overridden) and the overrides asked for (recorded as asked)."""

    job_id: str
    scene_id: str
    render_seed: int
    overrides: dict[str, Any] = Field(default_factory=dict)


class StoredJobSpec(Versioned):
    """The spec as stored: the client's spec with the resolved category list, its owner, and the limits it
    was checked against."""

    job_id: str
    tenant: str
    created_at: datetime
    spec: JobSpec
    train_categories: list[str]
    limits: JobLimits | None = None  # None: stored before limits were recorded
    # A re-render job (POST /v1/jobs/{id}/samples/{sid}/rerender): the sample it renders again. Set by the
    # API, never by a client's spec.
    rerender_of: RerenderOrigin | None = None


class Transition(Model):
    state: JobState
    at: datetime
    reason: str | None = None


class JobStatus(Versioned):
    job_id: str
    tenant: str
    state: JobState
    created_at: datetime
    updated_at: datetime
    planned_scenes: int
    transitions: list[Transition] = Field(default_factory=list)
    error: str | None = None
    dataset_id: str | None = None


# ---------------------------------------------------------------- categories

class NovelCategory(Model):
    name: str
    nearest_train: str
    score: float  # similarity to the nearest training category
    support: int = 1  # LLM rounds that proposed it (1 for the embedding backend)
    reason: str | None = None
    source: str = ""  # backend name
    # Thing (countable object) or stuff (amorphous region), for panoptic exports; None: not decided.
    isthing: bool | None = None


class CategorySet(Versioned):
    job_id: str
    backend: str
    train: list[str]
    novel: list[NovelCategory]
    dropped: list[dict[str, Any]] = Field(default_factory=list)  # {"name":..., "reason":...}

    @property
    def vocabulary(self) -> list[str]:
        return list(self.train) + [n.name for n in self.novel]


# ---------------------------------------------------------------- the job's plan

class SceneRef(Model):
    job_id: str
    scene_id: str


class PlannedScene(Model):
    scene_id: str
    novel_category: str
    seed: int  # the scene seed (shared/seeding.py): every stage's seed for this scene derives from it
    # A stage's seed pinned rather than derived (stage name -> seed): a re-render renders with its origin's
    # render seed, or the one asked for.
    stage_seeds: dict[str, int] = Field(default_factory=dict)
    origin: SceneRef | None = None  # a re-render: the sample it renders again


class JobPlan(Versioned):
    """What a job makes, written once by the association stage (`jobs/{job}/plan.json`, its output: the
    association is done when the plan exists) and read by every later stage instead of recomputing it:
    the scenes, each scene's novel category and seed, and the limits in force. With a scene's layout and
    render record it is enough to render any scene again (`shared/plan.py`)."""

    job_id: str
    job_seed: int
    images_per_category: int | None = None  # None: a job with a category_budget (or a re-render)
    # Images per novel category when the job gave a budget (the closed loop's allocation), in scene order.
    category_budget: dict[str, int] | None = None
    scenes: list[PlannedScene]
    limits: JobLimits | None = None
    created_at: datetime = Field(default_factory=utcnow)
    _by_id: dict[str, PlannedScene] | None = PrivateAttr(None)

    @property
    def scene_ids(self) -> list[str]:
        return [sc.scene_id for sc in self.scenes]

    def scene(self, scene_id: str) -> PlannedScene:
        if self._by_id is None:
            self._by_id = {sc.scene_id: sc for sc in self.scenes}
        try:
            return self._by_id[scene_id]
        except KeyError:
            raise KeyError(f"scene {scene_id!r} is not in the plan of job {self.job_id}") from None


# ---------------------------------------------------------------- layouts

NormBox = Annotated[list[float], Field(min_length=4, max_length=4)]


class LayoutObject(Model):
    category: str = Field(min_length=1)
    box: NormBox  # normalised [x0, y0, x1, y1]
    is_novel: bool = False

    @field_validator("box")
    @classmethod
    def _box(cls, b: list[float]) -> list[float]:
        x0, y0, x1, y1 = b
        if not all(0.0 <= c <= 1.0 for c in b):
            raise ValueError(f"box {b} has coordinates outside [0, 1]")
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"box {b} must have x1 > x0 and y1 > y0")
        return [float(c) for c in b]

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)


class SceneLayout(Versioned):
    job_id: str
    scene_id: str
    scene_index: int
    novel_category: str
    caption: str
    objects: list[LayoutObject]
    seed: int  # the layout seed the backend drew with (the scene's layout-stage seed, shared/seeding.py)
    backend: str
    dropped: list[LayoutObject] = Field(default_factory=list)

    @model_validator(mode="after")
    def _novel_present(self) -> SceneLayout:
        if not any(o.category == self.novel_category for o in self.objects):
            raise ValueError(f"the layout must contain its novel category {self.novel_category!r}")
        return self


# ---------------------------------------------------------------- renders

class RenderRecord(Versioned):
    """A render's provenance (`jobs/{job}/renders/{scene}.json`): with the layout it names, enough to render the
    image again, or a variant with other `seed`, `synthesis` parameters or size."""

    job_id: str
    scene_id: str
    image_key: str
    layout_key: str | None = None  # the layout rendered (None in records written before it was recorded)
    width: int
    height: int
    backend: str
    seed: int  # the render seed: the scene's synthesis-stage seed (shared/seeding.py)
    synthesis: SynthesisParams | None = None  # the parameters asked for
    model: dict[str, Any] = Field(default_factory=dict)  # path, revision hash, dtype ...
    params: dict[str, Any] = Field(default_factory=dict)  # what the backend reports it ran: scheduler class ...
    dropped_objects: list[LayoutObject] = Field(default_factory=list)
    # What the render ran with beyond its parameters (shared/provenance.py): package versions (torch, diffusers,
    # transformers, open_clip, segment-anything, dreammask) and the sha256 of every weight file the backend read.
    environment: dict[str, Any] = Field(default_factory=dict)
    origin: SceneRef | None = None  # a re-render: the sample it renders again
    seconds: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- annotations

class RLE(Model):
    size: list[int]  # [height, width]
    counts: str


class InstanceAnnotation(Model):
    instance_id: int
    category: str
    is_novel: bool
    bbox: list[float]  # pixels [x0, y0, x1, y1] of the prompt box
    mask: RLE
    area: int
    scores: dict[str, float] = Field(default_factory=dict)


class SceneAnnotation(Versioned):
    job_id: str
    scene_id: str
    image_key: str
    width: int
    height: int
    mask_backend: str
    score_backend: str
    instances: list[InstanceAnnotation]
    seconds: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    provenance: dict[str, Any] = Field(default_factory=dict)  # describe() of the mask and score backends


class SceneFailure(Versioned):
    job_id: str
    scene_id: str
    stage: str
    reason: str
    at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- curation

class InstanceDecision(Model):
    instance_id: int
    category: str
    kept: bool
    reasons: list[str] = Field(default_factory=list)  # rules that rejected it


class SceneDecision(Model):
    scene_id: str
    kept: bool
    reason: str | None = None
    instances: list[InstanceDecision] = Field(default_factory=list)


class DatasetCategory(Model):
    id: int  # for a preset, the preset's official id (COCO panoptic: 1..200); novel categories after them
    name: str
    is_novel: bool
    isthing: int = 1
    dreammask_origin: Literal["train", "novel"] = "train"
    nearest_train: str | None = None  # novel: the training category it was derived from


class CuratedInstance(Model):
    """A kept instance, in the form every exporter reads: COCO-ready, masks decoded once at curation time."""

    instance_id: int
    category: str
    category_id: int
    isthing: int
    is_novel: bool
    segmentation: RLE  # the full mask
    area: int  # pixels of the full mask
    bbox: list[int]  # COCO [x, y, w, h] of the full mask
    segment_id: int  # value in the panoptic / processed_dataset label maps (0: hidden by nearer instances)
    visible_area: int  # pixels of the instance in the panoptic map (front instances hide back ones)
    visible_bbox: list[int]
    polygon: list[float] = Field(default_factory=list)  # normalised x,y pairs of its largest outline (YOLO)
    score: float | None = None  # the score the thresholds read
    scores: dict[str, float] = Field(default_factory=dict)
    prompt_bbox: list[float] = Field(default_factory=list)  # pixels [x0, y0, x1, y1] of the layout box


class CuratedScene(Versioned):
    """The per-scene curation record (`jobs/{job}/curated/{scene}.json`): the selection decision, the kept
    instances ready to export, and which per-scene export pieces were written. Written last by the
    per-scene curation step (its presence means the scene is curated); the per-job assemble step reads only
    these records to stream the dataset files."""

    job_id: str
    scene_id: str
    kept: bool
    decision: SceneDecision
    metric: str  # the score the selection read
    metric_values: list[float] = Field(default_factory=list)  # that score of every instance (card histograms)
    width: int
    height: int
    image_key: str  # the rendered image (jobs/{job}/images/{scene}.png)
    dataset_image: str | None = None  # the image's path inside the dataset (kept scenes)
    thumbnail_key: str  # a small JPEG of the image with the kept masks drawn (jobs/{job}/curated/{scene}.jpg)
    novel_category: str | None = None
    caption: str | None = None
    instances: list[CuratedInstance] = Field(default_factory=list)  # kept instances only
    pieces: dict[str, list[str]] = Field(default_factory=dict)  # exporter -> dataset-relative files written
    created_at: datetime = Field(default_factory=utcnow)


class DatasetManifest(Versioned):
    dataset_id: str
    job_id: str
    tenant: str
    created_at: datetime
    categories: list[DatasetCategory]
    images: int
    instances: int
    files: dict[str, str]  # role -> object key
    selection: dict[str, Any] = Field(default_factory=dict)
    is_synthetic: bool = True
    # "sha256:<hex>" of every file under datasets/{id}/ but the manifest, by path inside the dataset.
    checksums: dict[str, str] = Field(default_factory=dict)
    # Seeds (shared/seeding.py): the job's, and the scene seed of every image in the dataset.
    job_seed: int | None = None
    scene_seeds: dict[str, int] = Field(default_factory=dict)


# ---------------------------------------------------------------- API views

class StageCounts(Model):
    planned: int = 0
    done: int = 0
    failed: int = 0
    seconds: float = 0.0  # total backend time spent in this stage


class JobProgress(Versioned):
    """A finished job's stage counts (`jobs/{job}/progress.json`), written when it turns terminal and its
    Redis counters are dropped; `resume` deletes it and rebuilds the counters from the stage outputs."""

    job_id: str
    state: str
    stages: dict[str, StageCounts]


class JobView(Model):
    job_id: str
    url: str
    state: JobState
    name: str | None = None
    created_at: datetime
    updated_at: datetime
    planned_scenes: int
    stages: dict[str, StageCounts] = Field(default_factory=dict)
    transitions: list[Transition] = Field(default_factory=list)
    error: str | None = None
    errors: list[SceneFailure] = Field(default_factory=list)
    dataset_id: str | None = None
    dataset_url: str | None = None
    rerender_of: RerenderOrigin | None = None  # a re-render job: the sample it renders again
