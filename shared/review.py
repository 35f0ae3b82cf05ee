"""Review of curated samples, as stored records: the per-job sample index that the review UI pages through,
the people's accept/reject decisions, and the dataset versions published from them.

Object keys (all under the job, beside the samples they describe):

    jobs/{job}/samples/index.json            SampleIndex: totals, page size, categories, rules
    jobs/{job}/samples/pages/{n:05d}.json    one page of SampleSummary (page n, 0-based)
    jobs/{job}/samples/entries/{scene}.json  SampleEntry: one sample's summary and the page that holds it
    jobs/{job}/samples/facets/{id}/{n:05d}.json  page n of the samples in one facet (status=kept,
                                             category=dog, rule=score<0.30, or a sample-level rule such as
                                             rule=too few instances kept): what a filter reads
    jobs/{job}/samples/stats.json            per-category score histograms and kept/rejected counts
    jobs/{job}/samples/thumbs/{scene}.jpg    thumbnail, made once when the sample is curated
    jobs/{job}/samples/thumbs/{scene}.png    its mask overlay (transparent PNG, same size)
    jobs/{job}/reviews/{scene}.json          SampleReview: decisions on the sample and its instances
    jobs/{job}/versions/{n:04d}.json         DatasetVersion n >= 2 (version 1 is the job's first dataset)
    jobs/{job}/version-marks/{n:04d}.json    VersionMarks: the review marks version n was published with

A page is read with one GET, so page N of a 10 000-sample job costs what page N of a 100-sample job does.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Literal

from pydantic import Field

from . import keys
from .schemas import Model, Versioned, utcnow
from .storage import ObjectStore

PAGE_SIZE = 48
THUMB_PX = 192

Decision = Literal["accept", "reject"]


# ------------------------------------------------------------ keys

def samples_prefix(job_id: str) -> str:
    return keys.job_prefix(job_id) + "samples/"


def sample_index(job_id: str) -> str:
    return samples_prefix(job_id) + "index.json"


def sample_page(job_id: str, page: int) -> str:
    if page < 0:
        raise ValueError(f"invalid page {page}")
    return samples_prefix(job_id) + f"pages/{page:05d}.json"


def sample_entry(job_id: str, sid: str) -> str:
    return samples_prefix(job_id) + f"entries/{keys.check_id(sid, 'scene id')}.json"


def facet_id(facet: str) -> str:
    """A key-safe name for a facet such as ``category=traffic light`` (names hold spaces and more)."""
    return hashlib.sha1(facet.encode()).hexdigest()[:16]


def facet_page(job_id: str, facet: str, page: int) -> str:
    if page < 0:
        raise ValueError(f"invalid page {page}")
    return samples_prefix(job_id) + f"facets/{facet_id(facet)}/{page:05d}.json"


def sample_stats(job_id: str) -> str:
    return samples_prefix(job_id) + "stats.json"


def thumbnail(job_id: str, sid: str) -> str:
    return samples_prefix(job_id) + f"thumbs/{keys.check_id(sid, 'scene id')}.jpg"


def thumbnail_overlay(job_id: str, sid: str) -> str:
    return samples_prefix(job_id) + f"thumbs/{keys.check_id(sid, 'scene id')}.png"


def review(job_id: str, sid: str) -> str:
    return keys.job_prefix(job_id) + f"reviews/{keys.check_id(sid, 'scene id')}.json"


def reviews_prefix(job_id: str) -> str:
    return keys.job_prefix(job_id) + "reviews/"


def version(job_id: str, n: int) -> str:
    return keys.job_prefix(job_id) + f"versions/{n:04d}.json"


def versions_prefix(job_id: str) -> str:
    return keys.job_prefix(job_id) + "versions/"


def version_marks_prefix(job_id: str) -> str:
    return keys.job_prefix(job_id) + "version-marks/"


def version_marks(job_id: str, n: int) -> str:
    return keys.job_prefix(job_id) + f"version-marks/{n:04d}.json"


def version_dataset_id(job_id: str, n: int) -> str:
    """Version 1 is the job's first dataset, untouched; version n >= 2 is a dataset of its own."""
    base = keys.dataset_id_for_job(job_id)
    return base if n == 1 else f"{base}-v{n}"


# ------------------------------------------------------------ the sample index

class InstanceSummary(Model):
    id: int
    category: str
    is_novel: bool = False
    score: float | None = None  # the score the selection thresholds read
    metric: str | None = None
    kept: bool = True
    rules: list[str] = Field(default_factory=list)  # rules that rejected it (empty when kept)


class SampleSummary(Model):
    scene_id: str
    kept: bool
    reason: str | None = None
    novel_category: str | None = None
    caption: str | None = None
    width: int = 0
    height: int = 0
    instances: list[InstanceSummary] = Field(default_factory=list)

    def categories(self) -> set[str]:
        return {i.category for i in self.instances}

    @property
    def sample_rule(self) -> str | None:
        """The sample-level rule that dropped it (the code of its reason, e.g. "too few instances kept" for
        min_kept_fraction); None when kept."""
        return sample_rule(self.reason) if not self.kept else None


def sample_rule(reason: str | None) -> str | None:
    """``"too few instances kept: 1/3 instances pass (...)"`` -> ``"too few instances kept"``."""
    return reason.split(": ", 1)[0] if reason else None


class FacetInfo(Model):
    total: int
    pages: int


class SampleIndex(Versioned):
    job_id: str
    total: int
    page_size: int
    pages: int
    kept: int
    rejected: int
    categories: list[str]
    rules: list[str]  # rules that rejected an instance
    sample_rules: list[str] = Field(default_factory=list)  # rules that dropped a whole sample (same facets)
    facets: dict[str, FacetInfo] = Field(default_factory=dict)  # "status=kept", "category=dog", "rule=..."
    built_at: datetime = Field(default_factory=utcnow)


class SampleFilter(Model):
    category: str | None = None
    status: Literal["kept", "rejected"] | None = None
    min_score: float | None = None
    max_score: float | None = None
    rule: str | None = None

    def facets(self) -> list[str]:
        """The facets this filter implies (a sample must be in each)."""
        out = []
        if self.status:
            out.append(f"status={self.status}")
        if self.category:
            out.append(f"category={self.category}")
        if self.rule:
            out.append(f"rule={self.rule}")
        return out

    @property
    def active(self) -> bool:
        return any(v not in (None, "") for v in self.model_dump().values())

    def matches(self, s: SampleSummary) -> bool:
        if self.status == "kept" and not s.kept:
            return False
        if self.status == "rejected" and s.kept:
            return False
        insts = [i for i in s.instances if not self.category or i.category == self.category]
        if self.category and not insts:
            return False
        if self.rule and not (any(self.rule in i.rules for i in insts) or s.sample_rule == self.rule):
            return False
        if self.min_score is not None or self.max_score is not None:
            lo = self.min_score if self.min_score is not None else float("-inf")
            hi = self.max_score if self.max_score is not None else float("inf")
            if not any(i.score is not None and lo <= i.score <= hi for i in insts):
                return False
        return True


def read_index(store: ObjectStore, job_id: str) -> SampleIndex | None:
    return store.try_get_model(sample_index(job_id), SampleIndex)


def read_page(store: ObjectStore, job_id: str, page: int) -> list[SampleSummary]:
    return [SampleSummary.model_validate(x) for x in store.get_json(sample_page(job_id, page))]


def read_facet_page(store: ObjectStore, job_id: str, facet: str, page: int) -> list[SampleSummary]:
    return [SampleSummary.model_validate(x) for x in store.get_json(facet_page(job_id, facet, page))]


def query(store: ObjectStore, job_id: str, index: SampleIndex, page: int,
          flt: SampleFilter | None = None) -> tuple[list[SampleSummary], bool]:
    """One page of samples (0-based) and whether another page follows.

    Unfiltered: one read of one index page. Filtered by status, category or rule: the pages of the smallest
    of those facets, read in order until the requested page is full (with one facet, exactly one read); the
    rest of the filter (other facets, score range) is checked on each summary. A score range alone reads the
    index pages in order until the page is full.
    """
    size = index.page_size
    if flt is None or not flt.active:
        if page >= index.pages:
            return [], False
        return read_page(store, job_id, page), page + 1 < index.pages
    facets = flt.facets()
    if any(f not in index.facets for f in facets):
        return [], False  # a value no sample has
    if facets:
        facet = min(facets, key=lambda f: index.facets[f].total)
        n_pages = index.facets[facet].pages

        def read(p: int) -> list[SampleSummary]:
            return read_facet_page(store, job_id, facet, p)
        if len(facets) == 1 and flt.min_score is None and flt.max_score is None:
            if page >= n_pages:
                return [], False
            return read(page), page + 1 < n_pages
    else:
        n_pages = index.pages

        def read(p: int) -> list[SampleSummary]:
            return read_page(store, job_id, p)
    skip, out = page * size, []
    for p in range(n_pages):
        for s in read(p):
            if not flt.matches(s):
                continue
            if skip:
                skip -= 1
                continue
            if len(out) == size:
                return out, True
            out.append(s)
    return out, False


class SampleEntry(Model):
    page: int
    summary: SampleSummary


def read_entry(store: ObjectStore, job_id: str, sid: str) -> SampleEntry | None:
    return store.try_get_model(sample_entry(job_id, sid), SampleEntry)


def find_neighbours(store: ObjectStore, job_id: str, index: SampleIndex, entry: SampleEntry
                    ) -> tuple[str | None, str | None]:
    """The scenes before and after a sample in index order: its page, and a neighbour page at the edges."""
    ids = [s.scene_id for s in read_page(store, job_id, entry.page)]
    sid = entry.summary.scene_id
    if sid not in ids:
        return None, None
    pos = ids.index(sid)
    p = entry.page
    prev = ids[pos - 1] if pos > 0 else (read_page(store, job_id, p - 1)[-1].scene_id if p > 0 else None)
    nxt = ids[pos + 1] if pos + 1 < len(ids) else (
        read_page(store, job_id, p + 1)[0].scene_id if p + 1 < index.pages else None)
    return prev, nxt


# ------------------------------------------------------------ decisions of people

class ReviewMark(Model):
    decision: Decision
    who: str
    at: datetime = Field(default_factory=utcnow)


class ReviewEvent(Model):
    instance_id: int | None = None  # None: the whole sample
    decision: Decision | Literal["clear"]
    who: str
    at: datetime = Field(default_factory=utcnow)


class SampleReview(Versioned):
    job_id: str
    scene_id: str
    sample: ReviewMark | None = None
    instances: dict[str, ReviewMark] = Field(default_factory=dict)  # instance id (as text) -> mark
    history: list[ReviewEvent] = Field(default_factory=list)  # the latest decisions, oldest first
    history_dropped: int = 0  # older decisions no longer kept (the marks above still reflect them)

    def apply(self, event: ReviewEvent, keep: int | None = None) -> None:
        """Apply a decision; keep at most `keep` events of history (DREAMMASK_REVIEW_HISTORY_LIMIT), counting
        the rest, so a sample decided thousands of times stays a small record and a small page."""
        mark = None if event.decision == "clear" else ReviewMark(decision=event.decision, who=event.who, at=event.at)
        if event.instance_id is None:
            self.sample = mark
        elif mark is None:
            self.instances.pop(str(event.instance_id), None)
        else:
            self.instances[str(event.instance_id)] = mark
        self.history.append(event)
        if keep is not None and len(self.history) > keep:
            drop = len(self.history) - keep
            del self.history[:drop]
            self.history_dropped += drop


def read_reviews(store: ObjectStore, job_id: str) -> dict[str, SampleReview]:
    out = {}
    for k in store.list(reviews_prefix(job_id)):
        r = store.try_get_model(k, SampleReview)
        if r is not None:
            out[r.scene_id] = r
    return out


def marks_digest(reviews: dict[str, SampleReview]) -> str:
    """What a version's content depends on besides the (immutable) curated records: the decision of every
    mark in force, whoever made it and whenever. Equal digests publish equal datasets; no marks at all is
    version 1's content."""
    marks = {}
    for sid, r in sorted(reviews.items()):
        if r.sample is None and not r.instances:
            continue
        marks[sid] = {"sample": r.sample.decision if r.sample else None,
                      "instances": {k: m.decision for k, m in sorted(r.instances.items())}}
    return hashlib.sha256(json.dumps(marks, sort_keys=True).encode()).hexdigest()


NO_MARKS_DIGEST = marks_digest({})


class VersionMarks(Versioned):
    """The marks a version was requested with (their history left out): the version is published from these,
    not from whatever the marks are when its task runs, so its content matches its digest."""

    job_id: str
    version: int
    digest: str
    reviews: dict[str, SampleReview]


# ------------------------------------------------------------ published versions

class DatasetVersion(Versioned):
    job_id: str
    version: int
    dataset_id: str
    state: Literal["pending", "published", "failed"] = "pending"
    content_digest: str | None = None  # `marks_digest` of the marks it was published with
    created_at: datetime = Field(default_factory=utcnow)
    published_at: datetime | None = None
    who: str
    note: str | None = None
    error: str | None = None
    reviews: dict[str, int] = Field(default_factory=dict)  # counts of decisions honoured
    images: int | None = None
    instances: int | None = None


def list_versions(store: ObjectStore, job_id: str) -> list[DatasetVersion]:
    out = []
    for k in sorted(store.list(versions_prefix(job_id))):
        v = store.try_get_model(k, DatasetVersion)
        if v is not None:
            out.append(v)
    return out
