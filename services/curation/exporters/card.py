"""The dataset card (`card.json`, `card.md`) and the contact sheet (`contact_sheet.png`), from running
aggregates over the curated scene records: counts per category, fixed-bin score histograms, the selection
tally, and the first kept scenes' thumbnails (made at curation time)."""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np
from PIL import Image

from dreammask.shared import keys
from dreammask.shared.masks import png_bytes
from dreammask.shared.schemas import CuratedScene

from ..contact_sheet import contact_sheet
from ..selection import SelectionTally
from .base import ExportContext, Exporter

HIST_BINS = 10
EDGES = np.linspace(0.0, 1.0, HIST_BINS + 1)


class Histogram:
    def __init__(self):
        self.counts = np.zeros(HIST_BINS, np.int64)

    def add(self, values: list[float]) -> None:
        if values:
            self.counts += np.histogram(np.clip(values, 0, 1), bins=HIST_BINS, range=(0.0, 1.0))[0]

    def to_dict(self) -> dict:
        return {"edges": [round(float(e), 2) for e in EDGES], "counts": [int(c) for c in self.counts]}


class CardExporter(Exporter):
    name = "card"
    max_sheet_tiles = 40

    def start(self, ctx: ExportContext) -> None:
        self.per_cat = defaultdict(lambda: {"images": 0, "instances": 0})
        self.hist_all: dict[str, Histogram] = defaultdict(Histogram)
        self.hist_kept: dict[str, Histogram] = defaultdict(Histogram)
        self.tally = SelectionTally()
        self.thumbs: list[str] = []
        self.images = self.instances = 0

    def add(self, ctx: ExportContext, rec: CuratedScene) -> None:
        self.tally.add(rec.decision)
        self.hist_all[rec.metric].add(rec.metric_values)
        if not rec.kept:
            return
        self.images += 1
        self.instances += len(rec.instances)
        self.hist_kept[rec.metric].add([i.score for i in rec.instances if i.score is not None])
        for inst in rec.instances:
            self.per_cat[inst.category]["instances"] += 1
        for cat in {i.category for i in rec.instances}:
            self.per_cat[cat]["images"] += 1
        if len(self.thumbs) < self.max_sheet_tiles:
            self.thumbs.append(rec.thumbnail_key)

    def finish(self, ctx: ExportContext) -> dict[str, str]:
        card = {
            "dataset_id": ctx.dataset_id,
            "images": self.images,
            "instances": self.instances,
            "scenes_annotated": self.tally.scenes,
            "categories": {name: dict(v) for name, v in sorted(self.per_cat.items())},
            "category_list": [c.model_dump() for c in ctx.categories],
            "novel_categories": [c.name for c in ctx.categories if c.is_novel],
            "score_histograms": {m: {"all": h.to_dict(), "kept": self.hist_kept[m].to_dict()}
                                 for m, h in self.hist_all.items()},
            "selection": self.tally.result(),
            # Seeds (shared/seeding.py): every image's scene seed is in the manifest (`scene_seeds`).
            "job_seed": ctx.plan.job_seed if ctx.plan is not None else None,
            **(ctx.version or {}),
        }
        ctx.store.put_json(ctx.key(keys.CARD_JSON), card)
        ctx.store.put_bytes(ctx.key(keys.CARD_MD), render_card_md(card).encode(), "text/markdown")
        tiles = []
        for k in self.thumbs:
            with Image.open(io.BytesIO(ctx.store.get_bytes(k))) as im:
                tiles.append(im.convert("RGB"))
        sheet = contact_sheet(tiles, caption=f"{ctx.dataset_id}: {self.images} images kept of "
                                              f"{self.tally.scenes} annotated")
        ctx.store.put_bytes(ctx.key(keys.CONTACT_SHEET), png_bytes(sheet), "image/png")
        ctx.scratch["card"] = card
        return {"card": ctx.key(keys.CARD_JSON), "card_md": ctx.key(keys.CARD_MD),
                "contact_sheet": ctx.key(keys.CONTACT_SHEET)}


def render_card_md(card: dict) -> str:
    lines = [f"# Dataset card: {card['dataset_id']}", "",
             "Synthetic images (every sample `is_synthetic: true`) made by the DreamMask platform.", "",
             f"- images kept: {card['images']} of {card['scenes_annotated']} annotated scenes",
             f"- instances kept: {card['instances']}",
             f"- novel categories: {', '.join(card['novel_categories'])}",
             f"- seeds: job seed {card.get('job_seed')}; each image's scene seed in manifest.json (`scene_seeds`), "
             "from which its layout and render seeds derive", "",
             "## Categories", "", "| id | category | origin | thing | images | instances |", "|---|---|---|---|---|---|"]
    for c in card["category_list"]:
        v = card["categories"].get(c["name"], {"images": 0, "instances": 0})
        lines.append(f"| {c['id']} | {c['name']} | {c['dreammask_origin']} | {'yes' if c['isthing'] else 'no'} "
                     f"| {v['images']} | {v['instances']} |")
    if card.get("version"):
        lines += ["", f"## Version {card['version']}", "",
                  f"People's review decisions applied to {card.get('first_version')} (version 1): "
                  + (", ".join(f"{k} {v}" for k, v in sorted(card.get("reviews", {}).items())) or "none")]
    sel = card.get("selection", {})
    lines += ["", "## Selection", ""]
    for k, v in sel.items():
        lines.append(f"- {k}: {v}")
    for metric, h in card["score_histograms"].items():
        lines += ["", f"## Score histogram: {metric}", "", "| bin | all | kept |", "|---|---|---|"]
        for i, c in enumerate(h["all"]["counts"]):
            lines.append(f"| {h['all']['edges'][i]:.1f}-{h['all']['edges'][i + 1]:.1f} | {c} | {h['kept']['counts'][i]} |")
    return "\n".join(lines) + "\n"
