"""LayoutGPT-style scene planning with an LLM: one prompt per scene, validated, repaired or re-sampled.

Each scene's prompt carries a few exemplar layouts, the target (novel) category and the categories
allowed in the scene (C_train plus C_novel, the target and its nearest training category first). The
reply is validated (parsing.parse_layout_reply): categories outside the allowed list are dropped, boxes
are repaired when the repair is honest (pixels, swapped corners, slight overflow) and refused otherwise,
tiny boxes go, the object count is capped, and the target must be present and visible. A scene whose
replies stay unusable after the attempts becomes a `Failure` with the reason; the rest of the batch
goes on. A batch in which every scene failed because the server is unreachable raises instead, so the
task is retried with backoff rather than losing the scenes.
"""

from __future__ import annotations

from dreammask.shared.backends import Failure, LayoutRequest
from dreammask.shared.schemas import LayoutObject, SceneLayout, check_category_name, normalise_name
from dreammask.shared.seeding import scene_seed

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


def _build_task(req: LayoutRequest, s, core, backend_name: str, exemplars, cache: dict) -> LLMTask:
    max_len = core.max_category_name_length
    # The job seed comes with every request: each scene samples with its own seed derived from it, so the
    # scenes of one category differ and any scene re-plans identically.
    seed = scene_seed(req.seed, req.scene_index, "layout")
    novel = check_category_name(req.novel.name, max_length=max_len)
    train = _checked(req.train, max_len, cache)
    others = [t for t in _checked(req.novel_names, max_len, cache) if t != novel]
    allowed = layout_allowed(train + [o for o in others if o not in train], novel, req.novel.nearest_train,
                             s.layout_max_prompt_categories, seed)
    allowed_map: dict[str, str] = {}
    for name in allowed:
        allowed_map.setdefault(canonical(name), name)
        allowed_map.setdefault(normalise_name(name), name)
    novel_set = {novel, *others}
    max_objects = max(1, min(req.max_objects, 30))
    schema = layout_schema(allowed, max_objects, s.layout_caption_max_chars)
    shots = pick_exemplars(exemplars, novel, allowed, s.layout_exemplars, seed)

    def accept(text: str) -> SceneLayout:
        parsed = parse_layout_reply(
            text,
            allowed=allowed_map,
            novel=novel,
            max_objects=max_objects,
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
        messages=lambda in_prompt: layout_messages(novel, allowed, max_objects, shots, schema, schema_in_prompt=in_prompt),
        schema=schema,
        schema_name=LAYOUT_SCHEMA_NAME,
        accept=accept,
        temperature=s.layout_temperature,
        top_p=s.layout_top_p,
        max_tokens=s.layout_max_tokens,
        seed=seed,
    )


def plan_layouts(engine: Engine, s, core, requests: list[LayoutRequest], backend_name: str) -> list[SceneLayout | Failure]:
    exemplars = load_exemplars(str(s.layout_exemplars_file) if s.layout_exemplars_file else None)
    out: list[SceneLayout | Failure | None] = [None] * len(requests)
    tasks, index, cache = [], [], {}
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
