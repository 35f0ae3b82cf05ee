"""Category name association with an LLM: sampled rounds, self-consistency, screening, ranking.

1. R rounds of the same prompt, each sampled with its own seed; every round asks for more names than
   needed (an over-ask factor) so that agreement between rounds means something.
2. Each reply is parsed and validated on its own (parsing.parse_cna_reply): names are normalised to
   lower-case singular noun phrases, non-visual things and unusable names are refused.
3. Names proposed (after screening, below) in at least k rounds are kept (self-consistency: a name one sample invents and no other
   repeats is usually noise or a hallucination).
4. Before votes are counted, each round's names pass the screen every backend shares
   (similarity.screen_candidates with the WordNet lexical screen): synonyms, kinds, generalisations and
   parts of C_train are dropped with their reason, and spellings of one concept across rounds are merged
   into one name. After the vote the screen runs once more over the supported names (near-duplicates by
   embedding). Each kept name records the training category the LLM related it to (else the embedding's
   nearest), the LLM's reason, and `isthing` (the rounds' majority, else the lexical rule).
5. The rest is ranked by support (rounds that proposed it), then by mean position in the replies, and cut
   to the requested number.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from dreammask.shared.schemas import NovelCategory, check_category_name, normalise_name

from .engine import Engine, LLMTask, TaskFailure
from .parsing import LLMOutputError, LLMUnavailableError, parse_cna_reply
from .prompts import CNA_SCHEMA_NAME, cna_messages, cna_schema, prompt_train_sample

MAX_DROPPED = 1000  # categories.json stays readable even when a model rambles


class UnsafePromptInput(RuntimeError):
    """A category name that must not go into a prompt (control characters, length)."""


def checked_names(names: list[str], max_length: int, what: str) -> list[str]:
    out = []
    for i, n in enumerate(names):
        try:
            out.append(check_category_name(n, max_length=max_length))
        except ValueError as e:
            raise UnsafePromptInput(f"{what} item {i} cannot go into an LLM prompt: {e}") from None
    return out


def candidates_per_round(s, num_novel: int) -> int:
    n = math.ceil(num_novel * s.cna_overask_factor)
    return max(s.cna_min_candidates_per_round, min(n, s.cna_max_candidates_per_round))


def associate(
    engine: Engine,
    s,
    core,
    embedder,
    train: list[str],
    num_novel: int,
    seed: int,
    source: str,
) -> tuple[list[NovelCategory], list[dict]]:
    from dreammask.services.association.similarity import screen_candidates

    if num_novel < 1:
        raise ValueError("num_novel must be at least 1")
    train = checked_names(list(train), core.max_category_name_length, "training category")
    if not train:
        raise UnsafePromptInput("the training category list is empty")
    n = candidates_per_round(s, num_novel)
    max_name_length = core.max_category_name_length

    def make_task(r: int) -> LLMTask:
        shown = prompt_train_sample(train, s.cna_max_prompt_categories, seed + r)
        schema = cna_schema(n, shown, max_name_length, s.cna_reason_max_chars)
        return LLMTask(
            messages=lambda in_prompt, shown=shown, schema=schema: cna_messages(shown, n, schema, schema_in_prompt=in_prompt),
            schema=schema,
            schema_name=CNA_SCHEMA_NAME,
            accept=lambda text: parse_cna_reply(
                text,
                train=train,
                max_chars=s.llm_max_response_bytes,
                max_items=n,
                max_name_length=max_name_length,
                max_name_words=s.cna_max_name_words,
                reason_max_chars=s.cna_reason_max_chars,
            ),
            temperature=s.cna_temperature,
            top_p=s.cna_top_p,
            max_tokens=s.cna_max_tokens,
            seed=(seed * 1009 + r) % (2**31),
        )

    results = engine.run([make_task(r) for r in range(s.cna_rounds)], s.llm_parse_attempts)
    replies = [r for r in results if not isinstance(r, TaskFailure)]
    failures = [r for r in results if isinstance(r, TaskFailure)]
    k = s.cna_min_support
    if len(replies) < k:
        first = failures[0]
        if all(f.kind in ("unavailable", "rejected") for f in failures):
            raise LLMUnavailableError(f"category association: {first.reason}")
        raise LLMOutputError(
            f"category association: only {len(replies)} of {s.cna_rounds} LLM rounds gave a usable reply "
            f"({k} needed for self-consistency); {first.reason}"
        )

    dropped: list[dict] = []
    dropped_names: set[str] = set()

    def drop(name: str, reason: str) -> None:
        if name not in dropped_names and len(dropped) < MAX_DROPPED:
            dropped_names.add(name)
            dropped.append({"name": name, "reason": reason})

    # Each round's proposals pass the shared screen before they count as votes: a round that names a
    # training category in disguise votes for nothing, and two spellings of one concept in different
    # rounds ("light bulb", "lightbulb") are one name with two votes.
    from dreammask.services.association.similarity import lexical_screen_for

    lexical = lexical_screen_for(train, core)
    support: Counter[str] = Counter()
    positions: dict[str, list[float]] = defaultdict(list)
    reasons: dict[str, str] = {}
    related: dict[str, Counter] = defaultdict(Counter)
    things: dict[str, Counter] = defaultdict(Counter)
    canon_forms: dict[str, str] = {}
    canon_senses: dict[int, str] = {}

    def canonical_of(name: str) -> str:
        key = canon_forms.get(normalise_name(name).replace(" ", "").replace("-", ""))
        senses = lexical.sense_keys(name) if lexical is not None else frozenset()
        if key is None:
            key = next((canon_senses[x] for x in senses if x in canon_senses), name)
        canon_forms.setdefault(normalise_name(name).replace(" ", "").replace("-", ""), key)
        for x in senses:
            canon_senses.setdefault(x, key)
        return key

    for reply in replies:
        for item in reply.rejected:
            drop(item["name"], item["reason"])
        names = [p.name for p in reply.proposals]
        screened, round_dropped = screen_candidates(
            embedder, names, train, core.cna_synonym_threshold, 1.01, lexical=lexical  # no embedding dedup per round
        )
        for d in round_dropped:
            if not d["reason"].startswith("duplicate of"):
                drop(d["name"], d["reason"])
        ok = {k.name for k in screened}
        voted: set[str] = set()
        for pos, p in enumerate(reply.proposals):
            if p.name not in ok:
                continue
            name = canonical_of(p.name)
            if name in voted:  # one vote per round, however many spellings it used
                continue
            voted.add(name)
            support[name] += 1
            positions[name].append(pos / max(len(reply.proposals), 1))
            if p.reason and name not in reasons:
                reasons[name] = p.reason
            if p.related_to:
                related[name][p.related_to] += 1
            if p.isthing is not None:
                things[name][p.isthing] += 1

    supported = [name for name in support if support[name] >= k]
    for name in support:
        if support[name] < k:
            drop(name, f"proposed in {support[name]} of {len(replies)} rounds; self-consistency needs {k}")
    supported.sort(key=lambda nm: (-support[nm], sum(positions[nm]) / len(positions[nm])))

    kept_screened, screen_dropped = screen_candidates(
        embedder, supported, train, core.cna_synonym_threshold, core.cna_dedup_threshold, lexical=lexical
    )
    for d in screen_dropped:
        drop(d["name"], d["reason"])

    kept: list[NovelCategory] = []
    for screened_item in kept_screened:
        name, nearest, score = screened_item.name, screened_item.nearest, screened_item.score
        if len(kept) >= num_novel:
            drop(name, f"beyond the {num_novel} requested (supported by {support[name]} rounds)")
            continue
        # The training category the LLM related it to (majority over rounds) says more about the scenes
        # it belongs in than the embedding's nearest name ("backpack" -> person, not car); the score is
        # then the cosine to that category, so it still reads as a similarity.
        llm_related = related[name].most_common(1)[0][0] if related[name] else None
        if llm_related and llm_related != nearest:
            vecs = embedder.encode([normalise_name(name), normalise_name(llm_related)])
            nearest, score = llm_related, float(vecs[0] @ vecs[1])
        # Thing or stuff: the rounds' majority (the schema asks for it), else the lexical rule.
        isthing = things[name].most_common(1)[0][0] if things[name] else screened_item.isthing
        kept.append(
            NovelCategory(
                name=name, nearest_train=nearest, score=round(float(score), 4), support=support[name],
                reason=reasons.get(name), source=source, isthing=isthing,
            )
        )
    if not kept:
        why = Counter(d["reason"].split(" (")[0].split(";")[0] for d in dropped)
        summary = ", ".join(f"{c}x {r}" for r, c in why.most_common(4))
        raise LLMOutputError(
            f"category association: no name proposed by the LLM survived the filters ({summary or 'none proposed'})"
        )
    return kept, dropped
