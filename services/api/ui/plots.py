"""Server-side SVG charts for the plots page: nothing to load in the browser, and they print."""

from __future__ import annotations

from html import escape

KEPT, REJECTED, AXIS = "#2e8b57", "#c0392b", "#555"


def histogram_svg(title: str, kept: list[int], rejected: list[int], width: int = 320, height: int = 170) -> str:
    """Stacked score histogram over [0, 1]: kept instances below, rejected above."""
    bins = max(len(kept), len(rejected), 1)
    top = max([k + r for k, r in zip(kept, rejected, strict=False)] + [1])
    left, bottom, pad_top = 34, 28, 22
    pw, ph = width - left - 8, height - bottom - pad_top
    bw = pw / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)} score histogram">',
             f'<text x="{left}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>']
    for i in range(bins):
        k = kept[i] if i < len(kept) else 0
        r = rejected[i] if i < len(rejected) else 0
        x = left + i * bw
        hk, hr = ph * k / top, ph * r / top
        y0 = pad_top + ph
        if k:
            parts.append(f'<rect x="{x + 1:.1f}" y="{y0 - hk:.1f}" width="{bw - 2:.1f}" height="{hk:.1f}" '
                         f'fill="{KEPT}"><title>{i / bins:.1f}-{(i + 1) / bins:.1f}: {k} kept</title></rect>')
        if r:
            parts.append(f'<rect x="{x + 1:.1f}" y="{y0 - hk - hr:.1f}" width="{bw - 2:.1f}" height="{hr:.1f}" '
                         f'fill="{REJECTED}"><title>{i / bins:.1f}-{(i + 1) / bins:.1f}: {r} rejected</title></rect>')
    y0 = pad_top + ph
    parts.append(f'<line x1="{left}" y1="{y0}" x2="{left + pw}" y2="{y0}" stroke="{AXIS}"/>')
    parts.append(f'<line x1="{left}" y1="{pad_top}" x2="{left}" y2="{y0}" stroke="{AXIS}"/>')
    for t in (0, 0.5, 1):
        parts.append(f'<text x="{left + t * pw:.1f}" y="{y0 + 14}" font-size="10" text-anchor="middle">{t:g}</text>')
    parts.append(f'<text x="{left - 4}" y="{pad_top + 8}" font-size="10" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{left - 4}" y="{y0}" font-size="10" text-anchor="end">0</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 2}" font-size="10" text-anchor="middle">score</text>')
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
