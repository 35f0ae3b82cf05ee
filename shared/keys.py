"""The object-key layout, in one place. Every output key is a pure function of (job, scene, stage),
which is what makes stages idempotent: a task whose output exists skips its work."""

from __future__ import annotations

import re

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not _ID_RE.match(value) or ".." in value:
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def scene_id(index: int) -> str:
    return f"s{index:05d}"


def scene_index(sid: str) -> int:
    return int(sid[1:])


def dataset_id_for_job(job_id: str) -> str:
    return f"ds-{job_id}"


# ------------------------------------------------------------ jobs

def job_prefix(job_id: str) -> str:
    return f"jobs/{check_id(job_id, 'job id')}/"


def spec(job_id: str) -> str:
    return job_prefix(job_id) + "spec.json"


def status(job_id: str) -> str:
    return job_prefix(job_id) + "status.json"


def progress(job_id: str) -> str:
    """The stage counts of a terminal job (JobProgress), kept once its Redis counters are gone."""
    return job_prefix(job_id) + "progress.json"


def categories(job_id: str) -> str:
    return job_prefix(job_id) + "categories.json"


def plan(job_id: str) -> str:
    """The job's plan (JobPlan): its scenes, their categories and seeds, the limits in force."""
    return job_prefix(job_id) + "plan.json"


def layout(job_id: str, sid: str) -> str:
    return job_prefix(job_id) + f"layouts/{check_id(sid, 'scene id')}.json"


def image(job_id: str, sid: str) -> str:
    return job_prefix(job_id) + f"images/{check_id(sid, 'scene id')}.png"


def render_record(job_id: str, sid: str) -> str:
    return job_prefix(job_id) + f"renders/{check_id(sid, 'scene id')}.json"


def annotation(job_id: str, sid: str) -> str:
    return job_prefix(job_id) + f"annotations/{check_id(sid, 'scene id')}.json"


def curated(job_id: str, sid: str) -> str:
    """The per-scene curation record (CuratedScene): written last by the per-scene curation step."""
    return job_prefix(job_id) + f"curated/{check_id(sid, 'scene id')}.json"


def curated_thumbnail(job_id: str, sid: str) -> str:
    """A small JPEG (longest side 256 px) of the scene with its kept masks drawn, for review and the card."""
    return job_prefix(job_id) + f"curated/{check_id(sid, 'scene id')}.jpg"


def failure(job_id: str, sid: str) -> str:
    return job_prefix(job_id) + f"failures/{check_id(sid, 'scene id')}.json"


def rerenders_prefix(job_id: str, sid: str) -> str:
    """Markers of the re-render jobs made from a sample: `jobs/{job}/rerenders/{scene}/{new job}`."""
    return job_prefix(job_id) + f"rerenders/{check_id(sid, 'scene id')}/"


def rerender_marker(job_id: str, sid: str, new_job_id: str) -> str:
    return rerenders_prefix(job_id, sid) + check_id(new_job_id, "job id")


def tenant_job_marker(tenant: str, job_id: str) -> str:
    return f"tenants/{check_id(tenant, 'tenant')}/jobs/{check_id(job_id, 'job id')}"


def tenant_jobs_prefix(tenant: str) -> str:
    return f"tenants/{check_id(tenant, 'tenant')}/jobs/"


# ------------------------------------------------------------ datasets

def dataset_prefix(dataset_id: str) -> str:
    return f"datasets/{check_id(dataset_id, 'dataset id')}/"


def dataset_manifest(dataset_id: str) -> str:
    return dataset_prefix(dataset_id) + "manifest.json"


def dataset_manifest_for_job(job_id: str) -> str:
    return dataset_manifest(dataset_id_for_job(job_id))


def dataset_file(dataset_id: str, relative: str) -> str:
    parts = relative.split("/")
    if not relative or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid dataset file path: {relative!r}")
    return dataset_prefix(dataset_id) + relative


# Relative paths inside a dataset (the export layout; docs/architecture.md describes each).
COCO_INSTANCES = "annotations/instances.json"
COCO_PANOPTIC = "annotations/panoptic.json"
PANOPTIC_DIR = "panoptic"
IMAGES_DIR = "images"
PROCESSED_DIR = "processed_dataset"
CARD_JSON = "card.json"
CARD_MD = "card.md"
DECISIONS = "selection.json"
CONTACT_SHEET = "contact_sheet.png"
YOLO_LABELS_DIR = "labels"  # Ultralytics finds labels/{scene}.txt beside images/{scene}.png
YOLO_DATA = "data.yaml"
HF_DIR = "hf"  # Hugging Face `datasets` parquet shards: hf/data/train-00000.parquet, ...

# ------------------------------------------------------------ trainings

def training_prefix(training_id: str) -> str:
    return f"trainings/{check_id(training_id, 'training id')}/"
