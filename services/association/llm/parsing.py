"""Parsing of LLM replies: never trusted, always bounded, validated, repaired where the repair is safe.

Every function here takes text a model (or a hostile server) wrote and either returns validated values
or raises `LLMOutputError` with a message a user can act on. Repairs are limited to what keeps the
meaning (code fences, prose around the JSON, trailing commas, reversed or pixel-unit boxes, coordinates a
hair outside [0, 1]); anything else is rejected so that the caller samples again.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field

from dreammask.shared.schemas import normalise_name

from .names import canonical, clean_llm_name, is_abstract


class LLMOutputError(RuntimeError):
    """A reply that cannot be used: malformed, empty, off-schema, hostile or too large."""


class LLMUnavailableError(RuntimeError):
    """The LLM server could not be reached or kept failing (after the retries)."""


class LLMRequestRejected(RuntimeError):
    """The server refused the request itself (4xx other than 429): a configuration problem."""


MAX_JSON_DEPTH = 20


def excerpt(text: str, n: int = 80) -> str:
    """A short, printable quote of untrusted text for error messages."""
    t = "".join(ch if ch.isprintable() else " " for ch in text[: n * 2])
    t = " ".join(t.split())
    return repr(t[:n] + ("..." if len(text) > n else ""))


def _strip_fences(text: str) -> str:
    m = re.search(r"```(?:json|JSON)?\s*\n?(.*?)```", text, re.S)
    return m.group(1) if m else text


def _balanced_object(text: str, start: int) -> str | None:
    """The JSON object or array starting at `start`, found by bracket matching outside strings."""
    stack = []
    in_str = esc = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append(ch)
            if len(stack) > MAX_JSON_DEPTH:
                return None
        elif ch in "}]":
            if not stack or (ch == "}") != (stack[-1] == "{"):
                return None
            stack.pop()
            if not stack:
                return text[start : i + 1]
    return None


def _depth(value, d: int = 0) -> int:
    if d > MAX_JSON_DEPTH:
        return d
    if isinstance(value, dict):
        return max([_depth(v, d + 1) for v in value.values()] or [d + 1])
    if isinstance(value, list):
        return max([_depth(v, d + 1) for v in value] or [d + 1])
    return d


def _loads(text: str):
    def no_constants(name):
        raise ValueError(f"JSON constant {name} is not allowed")

    return json.loads(text, parse_constant=no_constants)


def extract_json(text: object, max_chars: int) -> dict | list:
    """The first JSON object (or array) in a reply, tolerating code fences and prose around it."""
    if not isinstance(text, str):
        raise LLMOutputError(f"reply content is {type(text).__name__}, not text")
    if len(text) > max_chars:
        raise LLMOutputError(f"reply is {len(text)} characters, over the limit of {max_chars}; refused unparsed")
    body = text.strip()
    if not body:
        raise LLMOutputError("reply is empty")
    candidates = [body, _strip_fences(body).strip()]
    first = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
    if first >= 0:
        obj = _balanced_object(body, first)
        if obj:
            candidates.append(obj)
    for cand in candidates:
        for attempt in (cand, re.sub(r",\s*([}\]])", r"\1", cand)):  # repair: trailing commas
            try:
                value = _loads(attempt)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, (dict, list)):
                if _depth(value) > MAX_JSON_DEPTH:
                    raise LLMOutputError(f"reply JSON is nested deeper than {MAX_JSON_DEPTH} levels")
                return value
    raise LLMOutputError(f"reply is not JSON: {excerpt(body)}")


_INJECTION = re.compile(
    r"(ignore|disregard|forget)\b.{0,40}\b(instruction|prompt|rule|above|previous)|system prompt|"
    r"<\s*/?\s*(script|iframe|img|svg)|https?://|javascript:|\bsudo\b|rm -rf|api[_ ]?key|password",
    re.I,
)


def clean_text(value: object, max_chars: int) -> str | None:
    """Free text from a model (a reason, a caption): printable, single-spaced, bounded; None when the text
    is missing or reads like an instruction, a URL or markup rather than a description."""
    if not isinstance(value, str):
        return None
    value = value[: max_chars * 4]
    t = unicodedata.normalize("NFKC", value)
    t = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in t)
    t = " ".join(t.split())
    if not t or _INJECTION.search(t):
        return None
    if len(t) > max_chars:
        t = t[: max_chars - 3].rsplit(" ", 1)[0] + "..."
    return t


# ---------------------------------------------------------------------------------------------- CNA


@dataclass
class Proposal:
    name: str  # canonical: lower case, singular
    reason: str | None
    related_to: str | None
    raw: str
    isthing: bool | None = None  # the model's thing (countable) or stuff (region) decision


@dataclass
class CNAReply:
    proposals: list[Proposal]
    rejected: list[dict] = field(default_factory=list)  # {"name", "reason"} for items refused here


def parse_cna_reply(
    text: object,
    *,
    train: list[str],
    max_chars: int,
    max_items: int,
    max_name_length: int,
    max_name_words: int,
    reason_max_chars: int,
) -> CNAReply:
    """Validate one CNA round. Raises LLMOutputError when the reply as a whole is unusable; single bad
    items are refused and reported in `rejected`."""
    value = extract_json(text, max_chars)
    if isinstance(value, dict):
        items = value.get("categories")
        if items is None:
            lists = [v for v in value.values() if isinstance(v, list)]
            items = lists[0] if len(lists) == 1 else None
    else:
        items = value
    if not isinstance(items, list):
        raise LLMOutputError('reply has no "categories" list')
    if not items:
        raise LLMOutputError('reply has an empty "categories" list')
    train_by_norm = {normalise_name(t): t for t in train}
    proposals: list[Proposal] = []
    rejected: list[dict] = []
    seen: set[str] = set()
    for item in items[: max_items * 2]:
        raw = item.get("name") if isinstance(item, dict) else item
        shown = raw[:max_name_length] if isinstance(raw, str) else repr(raw)[:40]
        try:
            name = clean_llm_name(raw, max_length=max_name_length, max_words=max_name_words)
        except ValueError as e:
            rejected.append({"name": clean_text(shown, max_name_length) or "(refused text)",
                             "reason": f"not a usable category name: {e}"})
            continue
        if isinstance(item, dict) and item.get("visual") is False:
            rejected.append({"name": name, "reason": "not a visual, physical thing (the model said so)"})
            continue
        if is_abstract(name):
            rejected.append({"name": name, "reason": "not a visual, physical thing"})
            continue
        if name in seen:
            continue
        seen.add(name)
        reason = clean_text(item.get("reason"), reason_max_chars) if isinstance(item, dict) else None
        related = item.get("related_to") if isinstance(item, dict) else None
        related = train_by_norm.get(normalise_name(related)) if isinstance(related, str) and len(related) < 200 else None
        isthing = item.get("isthing") if isinstance(item, dict) else None
        proposals.append(Proposal(name=name, reason=reason, related_to=related, raw=shown,
                                  isthing=isthing if isinstance(isthing, bool) else None))
        if len(proposals) >= max_items:
            break
    if not proposals:
        why = "; ".join(f"{r['name']!r}: {r['reason']}" for r in rejected[:3])
        raise LLMOutputError(f"reply proposed no usable category name ({why or 'no items'})")
    return CNAReply(proposals=proposals, rejected=rejected)


# ---------------------------------------------------------------------------------------------- layout


@dataclass
class ParsedObject:
    category: str
    box: list[float]


@dataclass
class LayoutReply:
    caption: str | None
    objects: list[ParsedObject]
    dropped: list[ParsedObject]  # valid boxes of categories outside the allowed vocabulary, or over the cap
    notes: list[str]  # repairs made


def _as_box(obj: dict) -> list[float] | None:
    box = obj.get("box", obj.get("bbox"))
    if isinstance(box, dict):
        if all(k in box for k in ("x0", "y0", "x1", "y1")):
            box = [box["x0"], box["y0"], box["x1"], box["y1"]]
        elif all(k in box for k in ("left", "top", "width", "height")):
            box = [box["left"], box["top"], box["left"] + box["width"], box["top"] + box["height"]]
        else:
            return None
    if not isinstance(box, list) or len(box) != 4:
        return None
    out = []
    for c in box:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            return None
        out.append(float(c))
    return out


def repair_box(box: list[float], image_size: int, notes: list[str]) -> list[float] | None:
    """Normalised [x0, y0, x1, y1] inside [0, 1], or None when no honest repair exists."""
    if max(box) > 1.5 and max(box) <= image_size * 1.05 and min(box) >= -0.05 * image_size:
        box = [c / image_size for c in box]  # pixels instead of fractions
        notes.append("pixel coordinates rescaled")
    x0, y0, x1, y1 = box
    if x1 < x0 or y1 < y0:
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        notes.append("reversed corners swapped")
    if min(x0, y0) < -0.05 or max(x1, y1) > 1.05:
        return None
    clamped = [min(max(c, 0.0), 1.0) for c in (x0, y0, x1, y1)]
    if clamped != [x0, y0, x1, y1]:
        notes.append("coordinates clamped to [0, 1]")
    return clamped


def parse_layout_reply(
    text: object,
    *,
    allowed: dict[str, str],
    novel: str,
    max_objects: int,
    image_size: int,
    min_box_side: float,
    min_novel_area: float,
    max_chars: int,
    caption_max_chars: int,
) -> LayoutReply:
    """Validate one layout. `allowed` maps canonical names (normalised, singular) to the names to emit.
    Raises LLMOutputError when no valid layout with the novel category remains."""
    value = extract_json(text, max_chars)
    if isinstance(value, list):
        value = {"objects": value}
    objects = value.get("objects")
    if not isinstance(objects, list):
        raise LLMOutputError('reply has no "objects" list')
    notes: list[str] = []
    kept: list[ParsedObject] = []
    dropped: list[ParsedObject] = []
    for item in objects[: max(max_objects * 4, 40)]:
        if not isinstance(item, dict):
            notes.append("a non-object item ignored")
            continue
        raw_cat = item.get("category", item.get("name", item.get("label")))
        box = _as_box(item)
        if not isinstance(raw_cat, str) or box is None:
            notes.append("an item without category or 4-number box ignored")
            continue
        box = repair_box(box, image_size, notes)
        if box is None:
            notes.append("a box far outside the image ignored")
            continue
        if box[2] - box[0] < min_box_side or box[3] - box[1] < min_box_side:
            notes.append("a box under the minimum size ignored")
            continue
        key = canonical(raw_cat) if len(raw_cat) <= 200 else ""
        if key not in allowed:
            name = clean_text(raw_cat, 64)
            if name and len(name) <= 64:
                dropped.append(ParsedObject(category=name, box=box))
            notes.append("an object outside the allowed categories dropped")
            continue
        kept.append(ParsedObject(category=allowed[key], box=box))
    novel_objs = [o for o in kept if o.category == novel]
    if not novel_objs:
        raise LLMOutputError(
            f"layout has no box of the scene's novel category {novel!r}"
            + (f" ({len(kept)} other objects)" if kept else " (no usable objects at all)")
        )
    biggest = max((o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) for o in novel_objs)
    if biggest < min_novel_area:
        raise LLMOutputError(
            f"the novel category {novel!r} covers {biggest:.4f} of the image, under the minimum {min_novel_area}"
        )
    if len(kept) > max_objects:
        # The novel object is kept first; context objects by the model's order.
        first_novel = novel_objs[0]
        rest = [o for o in kept if o is not first_novel]
        kept, over = [first_novel] + rest[: max_objects - 1], rest[max_objects - 1 :]
        dropped.extend(over)
        notes.append(f"{len(over)} objects over the limit of {max_objects} dropped")
    caption = clean_text(value.get("caption"), caption_max_chars)
    if value.get("caption") is not None and caption is None:
        notes.append("caption refused (not a plain description)")
    return LayoutReply(caption=caption, objects=kept, dropped=dropped, notes=notes)
