"""LayoutGPT-style scene planning with an LLM: one prompt per scene, validated, repaired or re-sampled.

Each scene's prompt carries a few exemplar layouts, the target (novel) category and the categories
allowed in the scene (C_train plus C_novel, the target and its nearest training category first). All of
that is chosen once per category (CategoryPrompt), so the scenes of a category send one identical prompt
and one schema (the server's prefix cache and guided-decoding grammar cache then serve them) and differ by
their sampling seed. The
reply is validated (parsing.parse_layout_reply): categories outside the allowed list are dropped, boxes
are repaired when the repair is honest (pixels, swapped corners, slight overflow) and refused otherwise,
tiny boxes go, the object count is capped, and the target must be present and visible. A scene whose
replies stay unusable after the attempts becomes a `Failure` with the reason; the rest of the batch
goes on. A batch in which every scene failed because the server is unreachable raises instead, so the
task is retried with backoff rather than losing the scenes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from dreammask.shared.backends import Failure, LayoutRequest
from dreammask.shared.schemas import LayoutObject, SceneLayout, check_category_name, normalise_name
from dreammask.shared.seeding import derive_seed, name_salt

from .engine import Engine, LLMTask, TaskFailure
from .names import canonical
from .parsing import LLMOutputError, LLMRequestRejected, LLMUnavailableError, parse_layout_reply
from .prompts import (
    LAYOUT_SCHEMA_NAME,
    layout_allowed,
    layout_messages,
    layout_schema,
    load_exemplars,
    pick_exemplars,
)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def default_caption(novel: str, objects: list[LayoutObject]) -> str:
    others = list(dict.fromkeys(o.category for o in objects if o.category != novel))[:4]
    tail = f" with {', '.join(others)}" if others else ""
    return f"a photo of {_article(novel)} {novel}{tail}"


def _checked(names: list[str], max_len: int, cache: dict) -> list[str]:
    key = tuple(names)
    if key not in cache:  # a batch shares its lists: check each once
        cache[key] = [check_category_name(t, max_length=max_len) for t in names]
    return cache[key]


@dataclass(frozen=True)
class CategoryPrompt:
    """Everything a layout prompt holds for one novel category: the same for each of its scenes, so the
    server sees one prompt prefix (prefix caching) and one guided-decoding grammar per category. Scenes
    differ by their sampling seed."""

    novel: str
    novel_set: frozenset[str]
    allowed: tuple[str, ...]
    allowed_map: dict[str, str]
    max_objects: int
    schema: dict
    messages: dict[bool, list]  # schema_in_prompt -> messages


def category_prompt(req: LayoutRequest, s, core, exemplars, cache: dict) -> CategoryPrompt:
    max_len = core.max_category_name_length
    max_objects = max(1, min(req.max_objects, 30))
    key = ("prompt", req.novel.name, req.novel.nearest_train, tuple(req.train), tuple(req.novel_names),
           max_objects, req.job_seed)
    hit = cache.get(key)
    if hit is not None:
        return hit
    novel = check_category_name(req.novel.name, max_length=max_len)
    train = _checked(req.train, max_len, cache)
    others = [t for t in _checked(req.novel_names, max_len, cache) if t != novel]
    # Chosen per category (seeded by the job seed and the category), not per scene.
    seed = derive_seed(req.job_seed, zlib.crc32(novel.encode()) & 0x7FFFFFFF, name_salt("layout-prompt"))
    allowed = layout_allowed(train + [o for o in others if o not in train], novel, req.novel.nearest_train,
                             s.layout_max_prompt_categories, seed)
    allowed_map: dict[str, str] = {}
    for name in allowed:
        allowed_map.setdefault(canonical(name), name)
        allowed_map.setdefault(normalise_name(name), name)
    schema = layout_schema(allowed, max_objects, s.layout_caption_max_chars)
    shots = pick_exemplars(exemplars, novel, allowed, s.layout_exemplars, seed)
    messages = {flag: layout_messages(novel, allowed, max_objects, shots, schema, schema_in_prompt=flag)
                for flag in (False, True)}
    prompt = CategoryPrompt(novel, frozenset({novel, *others}), tuple(allowed), allowed_map, max_objects, schema,
                            messages)
    if len(cache) > 4096:  # a long-lived worker sees many jobs: keep the cache bounded
        cache.clear()
    cache[key] = prompt
    return prompt


def _build_task(req: LayoutRequest, s, core, backend_name: str, exemplars, cache: dict) -> LLMTask:
    # Each scene samples with its own layout seed (from the job's plan), so the scenes of one category differ
    # and any scene re-plans identically.
    seed = req.seed
    cp = category_prompt(req, s, core, exemplars, cache)
    novel, novel_set = cp.novel, cp.novel_set

    def accept(text: str) -> SceneLayout:
        parsed = parse_layout_reply(
            text,
            allowed=cp.allowed_map,
            novel=novel,
            max_objects=cp.max_objects,
            image_size=req.image_size,
            min_box_side=s.layout_min_box_side,
            min_novel_area=s.layout_min_novel_area,
            max_chars=s.llm_max_response_bytes,
            caption_max_chars=s.layout_caption_max_chars,
        )
        objects = [LayoutObject(category=o.category, box=o.box, is_novel=o.category in novel_set) for o in parsed.objects]
        dropped = [LayoutObject(category=o.category, box=o.box, is_novel=False) for o in parsed.dropped]
        caption = parsed.caption or default_caption(novel, objects)
        if normalise_name(novel) not in normalise_name(caption):
            caption = f"{caption.rstrip('. ')}, with {_article(novel)} {novel}"
        try:
            return SceneLayout(
                job_id=req.job_id, scene_id=req.scene_id, scene_index=req.scene_index, novel_category=novel,
                caption=caption, objects=objects, seed=req.seed, backend=backend_name, dropped=dropped[:50],
            )
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            raise LLMOutputError(f"layout does not validate: {str(e).splitlines()[0]}") from None

    return LLMTask(
        messages=cp.messages.__getitem__,
        schema=cp.schema,
        schema_name=LAYOUT_SCHEMA_NAME,
        accept=accept,
        temperature=s.layout_temperature,
        top_p=s.layout_top_p,
        max_tokens=s.layout_max_tokens,
        seed=seed,
    )


def plan_layouts(engine: Engine, s, core, requests: list[LayoutRequest], backend_name: str,
                 cache: dict | None = None) -> list[SceneLayout | Failure]:
    """`cache`: the caller's per-category prompt cache, kept across calls (a worker plans one category's
    scenes over several batches); a fresh one per call when None."""
    exemplars = load_exemplars(str(s.layout_exemplars_file) if s.layout_exemplars_file else None)
    out: list[SceneLayout | Failure | None] = [None] * len(requests)
    tasks, index = [], []
    cache = {} if cache is None else cache
    for i, req in enumerate(requests):
        try:
            tasks.append(_build_task(req, s, core, backend_name, exemplars, cache))
            index.append(i)
        except ValueError as e:
            out[i] = Failure(reason=f"layout request refused before prompting: {e}")
    results = engine.run(tasks, s.llm_parse_attempts)
    failures = [r for r in results if isinstance(r, TaskFailure)]
    if results and len(failures) == len(results):
        # Nothing came back at all: a server problem, not a scene problem; let the task retry the batch.
        if all(f.kind == "unavailable" for f in failures):
            raise LLMUnavailableError(f"layout planning: {failures[0].reason}")
        if all(f.kind == "rejected" for f in failures):
            raise LLMRequestRejected(f"layout planning: {failures[0].reason}")
    for i, r in zip(index, results, strict=True):
        out[i] = Failure(reason=f"LLM layout failed: {r.reason}") if isinstance(r, TaskFailure) else r
    return out  # type: ignore[return-value]
