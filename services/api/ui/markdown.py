"""Dataset cards (Markdown) as HTML, safely: the whole text is HTML-escaped first, then a small subset of
Markdown is turned into tags this module writes itself: headings, paragraphs, lists, tables, fenced code,
code spans, bold, italics and links (http, https, mailto, or relative; anything else stays text). No HTML
in the card passes through: category names and captions may come from an LLM."""

from __future__ import annotations

import html
import re

from markupsafe import Markup

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_CODE_SPAN = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])[*_]([^*_]+)[*_](?![\w*])")
_SAFE_URL = re.compile(r"^(https?://|mailto:|/|#|\.{0,2}/?[\w.-]+(/|$|#|\?))", re.IGNORECASE)


def _safe_href(escaped_url: str) -> str | None:
    url = html.unescape(escaped_url)
    if any(ch.isspace() or ord(ch) < 32 for ch in url) or not _SAFE_URL.match(url):
        return None
    scheme = url.split(":", 1)[0].lower() if ":" in url.split("/", 1)[0] else ""
    if scheme and scheme not in ("http", "https", "mailto"):
        return None
    return html.escape(url, quote=True)


def _inline(text: str) -> str:
    """Inline Markdown on text that is already HTML-escaped."""
    spans: list[str] = []

    def keep(html_text: str) -> str:
        spans.append(html_text)
        return f"\x00{len(spans) - 1}\x00"

    text = _CODE_SPAN.sub(lambda m: keep(f"<code>{m.group(1)}</code>"), text)

    def link(m: re.Match) -> str:
        href = _safe_href(m.group(2))
        label = m.group(1)
        return keep(f'<a href="{href}" rel="nofollow noopener">{label}</a>') if href else m.group(0)

    text = _LINK.sub(link, text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(r"<em>\1</em>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], text)


def _cells(row: str) -> list[str]:
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|"):
        row = row[:-1]
    return [c.strip() for c in row.split("|")]


def render(md: str) -> Markup:
    """HTML for a Markdown text (see the module's docstring for what is understood)."""
    lines = html.escape(md.replace("\r\n", "\n").replace("\r", "\n"), quote=True).split("\n")
    out: list[str] = []
    para: list[str] = []
    i = 0

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            flush()
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            out.append("<pre><code>" + "\n".join(body) + "</code></pre>")
            i += 1
            continue
        if not line.strip():
            flush()
            i += 1
            continue
        m = _HEADING.match(line)
        if m:
            flush()
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
            continue
        if line.lstrip().startswith("|") and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]):
            flush()
            head = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            th = "".join(f"<th>{_inline(c)}</th>" for c in head)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
            out.append(f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>")
            continue
        for pattern, tag in ((_BULLET, "ul"), (_NUMBERED, "ol")):
            if pattern.match(line):
                flush()
                items = []
                while i < len(lines) and pattern.match(lines[i]):
                    items.append(f"<li>{_inline(pattern.match(lines[i]).group(1))}</li>")
                    i += 1
                out.append(f"<{tag}>{''.join(items)}</{tag}>")
                break
        else:
            para.append(line.strip())
            i += 1
    flush()
    return Markup("\n".join(out))
