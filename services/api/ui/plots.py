"""Server-side SVG charts for the plots page: nothing to load in the browser, and they print.

A histogram spans the scores the category actually has (from the 0.01-wide bins curation writes), draws the
job's score threshold where it falls, and each bar links to the review grid filtered to that category and
score range."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from urllib.parse import urlencode

KEPT, REJECTED, AXIS, THRESHOLD = "#2e8b57", "#c0392b", "#555", "#1f2d3d"
BAR_WIDTHS = (1, 2, 5, 10, 20, 25, 50)  # in 0.01 bins
MAX_BARS = 12
HALF_UNIT = 0.00005  # half the 4th decimal the summaries round scores to


@dataclass
class Bar:
    lo: float
    hi: float
    kept: int
    rejected: int
    url: str


def _bar_width(lo_bin: int, hi_bin: int) -> int:
    """The narrowest bar width (in 0.01 bins) whose aligned bars cover [lo_bin, hi_bin) in MAX_BARS or fewer."""
    return next((w for w in BAR_WIDTHS if math.ceil((hi_bin - (lo_bin // w) * w) / w) <= MAX_BARS), 100)


def bars_from_stats(cat: dict, grid_url: str, category: str, threshold: float | None = None) -> list[Bar]:
    """Bars over the range the scores span (widened to the threshold when that at most doubles it, and to at
    least 0.1), from the 0.01 bins of the stats; the ten 0.1 bins over [0, 1] of an index written before
    those existed. Each bar links to the grid filtered to it."""
    fine_k, fine_r = cat.get("fine_kept"), cat.get("fine_rejected")
    if fine_k is None or fine_r is None:
        k, r = cat.get("hist_kept") or [], cat.get("hist_rejected") or []
        n = max(len(k), len(r), 1)
        return [Bar(i / n, (i + 1) / n, k[i] if i < len(k) else 0, r[i] if i < len(r) else 0,
                    _link(grid_url, category, i / n, (i + 1) / n, i == 0, i == n - 1)) for i in range(n)]
    nb = len(fine_k)
    used = [i for i in range(nb) if fine_k[i] or fine_r[i]]
    if not used:
        return []
    lo, hi = (used[0] // 5) * 5, min(nb, -(-(used[-1] + 1) // 5) * 5)
    if threshold is not None and math.isfinite(threshold):
        t = int(round(threshold * nb))
        if t < lo and hi - t <= 2 * (hi - lo):
            lo = max(0, (t // 5) * 5)
        elif t >= hi and t + 1 - lo <= 2 * (hi - lo):
            hi = min(nb, -(-(t + 1) // 5) * 5)
    if hi - lo < 10:
        hi = min(nb, lo + 10)
        lo = max(0, hi - 10)
    width = _bar_width(lo, hi)
    bars = []
    for start in range((lo // width) * width, hi, width):
        end = min(nb, start + width)
        bars.append(Bar(start / nb, end / nb, sum(fine_k[start:end]), sum(fine_r[start:end]),
                        _link(grid_url, category, start / nb, end / nb, start == 0, end == nb)))
    return bars


def _link(grid_url: str, category: str, lo: float, hi: float, first: bool, last: bool) -> str:
    # [lo, hi) exactly: the upper bound stops half a rounding unit short; the outer bars are open-ended so
    # that a score outside [0, 1] is not lost.
    params = {"category": category}
    if not first:
        params["min_score"] = f"{lo:.2f}"
    if not last:
        params["max_score"] = f"{hi - HALF_UNIT:.5f}"
    return f"{grid_url}?{urlencode(params)}"


def histogram_svg(title: str, bars: list[Bar], threshold: float | None = None, metric: str | None = None,
                  width: int = 340, height: int = 190) -> str:
    """Stacked score histogram over the bars' range: kept instances below, rejected above; the threshold as
    a dashed line; each bar a link (keyboard-focusable) to the grid filtered to its range."""
    top = max([b.kept + b.rejected for b in bars] + [1])
    left, bottom, pad_top, right = 34, 30, 24, 18
    pw, ph = width - left - right, height - bottom - pad_top
    lo = bars[0].lo if bars else 0.0
    hi = bars[-1].hi if bars else 1.0
    span = max(hi - lo, 1e-9)
    x_of = lambda v: left + (v - lo) / span * pw  # noqa: E731
    y0 = pad_top + ph
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart histogram" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)} score histogram" data-category="{escape(title)}">',
             f'<text x="{left}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>']
    for b in bars:
        x, bw = x_of(b.lo), x_of(b.hi) - x_of(b.lo)
        hk, hr = ph * b.kept / top, ph * b.rejected / top
        label = f"{b.lo:.2f}-{b.hi:.2f}: {b.kept} kept, {b.rejected} rejected; open these samples"
        parts.append(f'<a href="{escape(b.url)}" class="bar" data-lo="{b.lo:.2f}" data-hi="{b.hi:.2f}" '
                     f'aria-label="{escape(title)} {escape(label)}"><title>{escape(label)}</title>')
        # The whole column is the target, even where the bar is short.
        parts.append(f'<rect x="{x + 1:.1f}" y="{pad_top}" width="{max(bw - 2, 1):.1f}" height="{ph}" '
                     'class="hit" fill="transparent"/>')
        if b.kept:
            parts.append(f'<rect x="{x + 1:.1f}" y="{y0 - hk:.1f}" width="{max(bw - 2, 1):.1f}" height="{hk:.1f}" '
                         f'fill="{KEPT}"/>')
        if b.rejected:
            parts.append(f'<rect x="{x + 1:.1f}" y="{y0 - hk - hr:.1f}" width="{max(bw - 2, 1):.1f}" '
                         f'height="{hr:.1f}" fill="{REJECTED}"/>')
        parts.append("</a>")
    parts.append(f'<line x1="{left}" y1="{y0}" x2="{left + pw}" y2="{y0}" stroke="{AXIS}"/>')
    parts.append(f'<line x1="{left}" y1="{pad_top}" x2="{left}" y2="{y0}" stroke="{AXIS}"/>')
    ticks = sorted({round(b.lo, 2) for b in bars} | {round(hi, 2)})
    step = max(1, math.ceil(len(ticks) / 6))
    for t in ticks[::step] + ([] if (len(ticks) - 1) % step == 0 else [ticks[-1]]):
        parts.append(f'<text x="{x_of(t):.1f}" y="{y0 + 13}" font-size="10" text-anchor="middle">{t:.2f}</text>')
    if threshold is not None:
        if lo <= threshold <= hi:
            tx = x_of(threshold)
            parts.append(f'<line x1="{tx:.1f}" y1="{pad_top}" x2="{tx:.1f}" y2="{y0}" stroke="{THRESHOLD}" '
                         f'stroke-width="2" stroke-dasharray="4 3" class="threshold" data-value="{threshold:g}">'
                         f'<title>min_score {threshold:g}</title></line>')
            right_side = tx + 4 < left + pw - 50
            parts.append(f'<text x="{tx + 4 if right_side else tx - 4:.1f}" y="{pad_top + 10}" font-size="10" '
                         f'text-anchor="{"start" if right_side else "end"}" class="threshold-label">'
                         f'min_score {threshold:g}</text>')
        else:
            where = "below" if threshold < lo else "above"
            parts.append(f'<text x="{left + pw:.1f}" y="14" font-size="10" text-anchor="end" '
                         f'class="threshold-label" data-value="{threshold:g}">min_score {threshold:g} ({where} '
                         'every score)</text>')
    parts.append(f'<text x="{left - 4}" y="{pad_top + 8}" font-size="10" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{left - 4}" y="{y0}" font-size="10" text-anchor="end">0</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 2}" font-size="10" text-anchor="middle">'
                 f'{escape(metric or "score")}</text>')
    parts.append("</svg>")
    return "".join(parts)


def counts_svg(rows: list[tuple[str, int, int]], width: int = 640) -> str:
    """Horizontal bars per category: kept and rejected instances."""
    row_h, label_w = 20, 150
    height = row_h * len(rows) + 30
    top = max([k + r for _, k, r in rows] + [1])
    pw = width - label_w - 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             'role="img" aria-label="kept and rejected instances per category">']
    for i, (name, k, r) in enumerate(rows):
        y = 10 + i * row_h
        wk, wr = pw * k / top, pw * r / top
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" font-size="11" text-anchor="end">{escape(name)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{wk:.1f}" height="{row_h - 5}" fill="{KEPT}">'
                     f'<title>{escape(name)}: {k} kept</title></rect>')
        parts.append(f'<rect x="{label_w + wk:.1f}" y="{y + 2}" width="{wr:.1f}" height="{row_h - 5}" '
                     f'fill="{REJECTED}"><title>{escape(name)}: {r} rejected</title></rect>')
        parts.append(f'<text x="{label_w + wk + wr + 4:.1f}" y="{y + 13}" font-size="10">{k} / {r}</text>')
    y = 10 + len(rows) * row_h + 12
    parts.append(f'<rect x="{label_w}" y="{y - 9}" width="10" height="10" fill="{KEPT}"/>'
                 f'<text x="{label_w + 14}" y="{y}" font-size="10">kept</text>'
                 f'<rect x="{label_w + 60}" y="{y - 9}" width="10" height="10" fill="{REJECTED}"/>'
                 f'<text x="{label_w + 74}" y="{y}" font-size="10">rejected</text>')
    parts.append("</svg>")
    return "".join(parts)


def curves_svg(rounds: list[int], series: dict[str, list[float | None]], colours: dict[str, str],
               dashed: set[str] | frozenset = frozenset(), width: int = 640, height: int = 300) -> str:
    """Per-class IoU (0-100) across a loop's rounds: one line per class, a dot per round it was measured in
    (with its value as a tooltip); `dashed` lines are the classes the loop does not steer (base classes)."""
    left, right, top, bottom = 40, 150, 16, 34
    pw, ph = width - left - right, height - top - bottom
    n = max(len(rounds) - 1, 1)
    x_of = lambda i: left + pw * i / n  # noqa: E731
    y_of = lambda v: top + ph * (1 - v / 100.0)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart curves" width="{width}" height="{height}" '
             'role="img" aria-label="per-class IoU across rounds">']
    for v in (0, 25, 50, 75, 100):
        y = y_of(v)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{v}</text>')
    for i, r in enumerate(rounds):
        parts.append(f'<text x="{x_of(i):.1f}" y="{top + ph + 14}" font-size="10" text-anchor="middle">{r}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" font-size="10" text-anchor="middle">round</text>')
    parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="{AXIS}"/>'
                 f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="{AXIS}"/>')
    for k, (name, values) in enumerate(series.items()):
        colour = colours.get(name, AXIS)
        dash = ' stroke-dasharray="4 3"' if name in dashed else ""
        pts = [(x_of(i), y_of(v), v) for i, v in enumerate(values) if v is not None]
        parts.append(f'<g class="series" data-class="{escape(name)}">')
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for (x, y, v), i in zip(pts, [i for i, v in enumerate(values) if v is not None]):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}" data-round="{rounds[i]}" '
                         f'data-value="{v:.2f}"><title>{escape(name)}, round {rounds[i]}: IoU {v:.1f}</title></circle>')
        ly = top + 12 + 15 * k
        parts.append(f'<line x1="{left + pw + 12}" y1="{ly - 4}" x2="{left + pw + 30}" y2="{ly - 4}" '
                     f'stroke="{colour}" stroke-width="2"{dash}/><text x="{left + pw + 34}" y="{ly}" '
                     f'font-size="11">{escape(name)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
