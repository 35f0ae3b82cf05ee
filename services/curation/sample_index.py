"""What the review UI pages through, made once when samples are curated: a thumbnail and a mask overlay per
sample (hooked into the per-scene curation step), and, from the curated records in the assemble step, a
compact summary per sample, index and facet pages of summaries, and per-category score statistics.

The keys are in `dreammask.shared.review`; the API only reads what this module writes."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
from PIL import Image

from dreammask.shared import review as rv
from dreammask.shared.masks import decode_rle, load_rgb
from dreammask.shared.schemas import CuratedScene, DatasetCategory, SceneAnnotation
from dreammask.shared.storage import ObjectStore

from .contact_sheet import PALETTE
from .selection import rule_of

HIST_BINS = 10


def summary_from_record(rec: CuratedScene, novel: set[str]) -> rv.SampleSummary:
    """A sample's summary from its curation record alone (no other read): the selection decision per
    instance, and the score the thresholds read (`metric_values` holds it for every instance that has it,
    in instance order; kept instances carry it too)."""
    decisions = rec.decision.instances
    aligned = len(rec.metric_values) == len(decisions)
    kept_scores = {i.instance_id: i.score for i in rec.instances}
    insts = []
    for k, d in enumerate(decisions):
        score = rec.metric_values[k] if aligned else kept_scores.get(d.instance_id)
        insts.append(rv.InstanceSummary(
            id=d.instance_id, category=d.category, is_novel=d.category in novel, metric=rec.metric,
            score=round(float(score), 4) if score is not None else None, kept=d.kept,
            rules=list(dict.fromkeys(rule_of(r) for r in d.reasons)),
        ))
    return rv.SampleSummary(scene_id=rec.scene_id, kept=rec.kept, reason=rec.decision.reason,
                            novel_category=rec.novel_category, caption=rec.caption, width=rec.width,
                            height=rec.height, instances=insts)


def write_thumbnails(store: ObjectStore, job_id: str, ann: SceneAnnotation, image: np.ndarray | None = None,
                     masks: dict[int, np.ndarray] | None = None, size: int = rv.THUMB_PX) -> None:
    """A plain JPEG thumbnail and a transparent PNG of its masks (colours of the UI's instance table), for the
    review grid's overlay toggle. Called by the per-scene curation step with what it has decoded already."""
    tkey, okey = rv.thumbnail(job_id, ann.scene_id), rv.thumbnail_overlay(job_id, ann.scene_id)
    if image is None:
        image = load_rgb(store.get_bytes(ann.image_key))
    h, w = image.shape[:2]
    scale = size / max(h, w)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    im = Image.fromarray(image).resize((tw, th), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=82)
    store.put_bytes(tkey, buf.getvalue(), "image/jpeg")
    rgba = np.zeros((h, w, 4), np.uint8)
    for i, inst in enumerate(ann.instances):
        m = masks[inst.instance_id] if masks and inst.instance_id in masks else decode_rle(inst.mask.model_dump())
        if m.shape != (h, w):
            continue
        rgba[m, :3] = PALETTE[i % len(PALETTE)].astype(np.uint8)
        rgba[m, 3] = 140
    ov = Image.fromarray(rgba, "RGBA").resize((tw, th), Image.NEAREST)
    buf = io.BytesIO()
    ov.save(buf, "PNG", compress_level=1)
    store.put_bytes(okey, buf.getvalue(), "image/png")


FINE_BINS = 100  # 0.01 wide: the plots page regroups them over the range the scores span


def _hist(values: list[float]) -> list[int]:
    counts, _ = np.histogram(np.clip(values, 0, 1), bins=HIST_BINS, range=(0.0, 1.0))
    return [int(c) for c in counts]


def fine_bin(score: float) -> int:
    """The 0.01-wide bin of a score: [k/100, (k+1)/100), the last one closed. The review grid's score filter
    selects exactly one bin's instances with min_score=k/100, max_score=(k+1)/100 - 0.00005 (scores are
    rounded to 4 decimals in the summaries)."""
    return min(FINE_BINS - 1, max(0, int(np.floor(score * FINE_BINS + 1e-9))))


def _fine(values: list[float]) -> list[int]:
    counts = [0] * FINE_BINS
    for v in values:
        counts[fine_bin(v)] += 1
    return counts


def write_index(store: ObjectStore, job_id: str, summaries: Iterable[rv.SampleSummary],
                page_size: int = rv.PAGE_SIZE) -> rv.SampleIndex:
    """Index pages in scene order, the index object (written last: its presence means complete), stats."""
    items = sorted(summaries, key=lambda s: s.scene_id)
    cats, rules, sample_rules = set(), set(), set()
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"kept": [], "rejected": []})
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"kept": 0, "rejected": 0})
    for s in items:
        if s.sample_rule:
            sample_rules.add(s.sample_rule)
        for i in s.instances:
            cats.add(i.category)
            rules.update(i.rules)
            kept = i.kept and s.kept
            counts[i.category]["kept" if kept else "rejected"] += 1
            if i.score is not None and math.isfinite(i.score):
                scores[i.category]["kept" if kept else "rejected"].append(i.score)
    pages = max(1, -(-len(items) // page_size))
    facets: dict[str, list[rv.SampleSummary]] = defaultdict(list)
    for s in items:
        facets[f"status={'kept' if s.kept else 'rejected'}"].append(s)
        for c in sorted(s.categories()):
            facets[f"category={c}"].append(s)
        for r in sorted({r for i in s.instances for r in i.rules} | ({s.sample_rule} if s.sample_rule else set())):
            facets[f"rule={r}"].append(s)
    facet_info = {}
    for facet, members in facets.items():
        n = -(-len(members) // page_size)
        for p in range(n):
            store.put_json(rv.facet_page(job_id, facet, p),
                           [s.model_dump(mode="json") for s in members[p * page_size:(p + 1) * page_size]])
        facet_info[facet] = rv.FacetInfo(total=len(members), pages=n)
    for p in range(pages):
        chunk = items[p * page_size:(p + 1) * page_size]
        store.put_json(rv.sample_page(job_id, p), [s.model_dump(mode="json") for s in chunk])
        for s in chunk:
            store.put_json(rv.sample_entry(job_id, s.scene_id), rv.SampleEntry(page=p, summary=s))

    def _range(c: str) -> dict:
        every = scores[c]["kept"] + scores[c]["rejected"]
        return {"min": min(every), "max": max(every)} if every else {"min": None, "max": None}

    store.put_json(rv.sample_stats(job_id), {
        "bins": HIST_BINS,
        "fine_bins": FINE_BINS,
        "categories": {c: {"kept": counts[c]["kept"], "rejected": counts[c]["rejected"],
                           "hist_kept": _hist(scores[c]["kept"]), "hist_rejected": _hist(scores[c]["rejected"]),
                           "fine_kept": _fine(scores[c]["kept"]), "fine_rejected": _fine(scores[c]["rejected"]),
                           **_range(c)}
                       for c in sorted(cats)},
        "samples": {"kept": sum(s.kept for s in items), "rejected": sum(not s.kept for s in items)},
    })
    index = rv.SampleIndex(
        job_id=job_id, total=len(items), page_size=page_size, pages=pages,
        kept=sum(s.kept for s in items), rejected=sum(not s.kept for s in items),
        categories=sorted(cats), rules=sorted(rules), sample_rules=sorted(sample_rules), facets=facet_info,
    )
    store.put_json(rv.sample_index(job_id), index)
    return index


class SampleIndexWriter:
    """Fed every curated record by the assemble step (in scene order), writes the index at the end.
    Holds only the small summaries (a few hundred bytes a sample)."""

    def __init__(self, store: ObjectStore, job_id: str, categories: list[DatasetCategory],
                 page_size: int = rv.PAGE_SIZE):
        self.store, self.job_id, self.page_size = store, job_id, page_size
        self.novel = {c.name for c in categories if c.is_novel}
        self.summaries: list[rv.SampleSummary] = []

    def add(self, rec: CuratedScene) -> None:
        self.summaries.append(summary_from_record(rec, self.novel))

    def finish(self) -> rv.SampleIndex:
        return write_index(self.store, self.job_id, self.summaries, self.page_size)
