"""The stage chain, declared once: which stage follows which, on which queue, under which task name, with
which batch size, per scene or per job, and where each stage's output lives.

Everything that needs the order reads it from here: the task skeleton (`shared/skeleton.py`) sends the
next stage's message and triggers the per-job stage after the last scene; `resume`
(`shared/orchestration.py`) re-enqueues what storage lacks; the job tracker (`shared/jobs.py`) counts
progress per stage and rebuilds its counters. Stage modules hold only their own work.

How to add a stage: docs/architecture.md, "The stage chain and how to add a stage".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

from . import keys
from .celery_app import (
    TASK_ANNOTATE,
    TASK_ASSEMBLE,
    TASK_ASSOCIATE,
    TASK_CURATE_SCENES,
    TASK_PLAN_LAYOUTS,
    TASK_RENDER,
    queue_of,
)

Per = Literal["scene", "job"]


@dataclass(frozen=True)
class StageDef:
    """One link of the chain.

    `output` is the key of the stage's output: `output(job_id, scene_id)` for a per-scene stage (its
    existence makes the stage skip that scene), `output(job_id)` for a per-job stage (its existence counts
    the stage done). `batch_size` names the `Settings` field that sizes the batches sent to this stage."""

    name: str
    task: str
    per: Per
    output: Callable[..., str]
    next: str | None = None
    batch_size: str | None = None
    description: str = ""

    @property
    def queue(self) -> str:
        return queue_of(self.task)

    @property
    def per_scene(self) -> bool:
        return self.per == "scene"

    def output_prefix(self, job_id: str) -> tuple[str, str]:
        """(prefix, suffix) around the scene id in this per-scene stage's output keys: listing the prefix
        finds the scenes whose output exists."""
        probe = keys.scene_id(0)
        key = self.output(job_id, probe)
        prefix, _, suffix = key.rpartition(probe)
        return prefix, suffix


class ChainError(ValueError):
    pass


class Chain:
    """An ordered, validated sequence of stages: a per-job start, per-scene stages, a per-job finisher."""

    def __init__(self, stages: Iterable[StageDef]):
        by_name: dict[str, StageDef] = {}
        for st in stages:
            if st.name in by_name:
                raise ChainError(f"stage {st.name!r} is declared twice")
            if st.per not in ("scene", "job"):
                raise ChainError(f"stage {st.name!r}: per must be 'scene' or 'job', not {st.per!r}")
            st.queue  # noqa: B018 - validates the task name
            by_name[st.name] = st
        targets = {st.next for st in by_name.values() if st.next}
        for st in by_name.values():
            if st.next and st.next not in by_name:
                raise ChainError(f"stage {st.name!r} is followed by unknown stage {st.next!r}")
        firsts = [n for n in by_name if n not in targets]
        if len(firsts) != 1:
            raise ChainError(f"the chain needs exactly one first stage, found {firsts}")
        order, seen, cur = [], set(), firsts[0]
        while cur:
            if cur in seen:
                raise ChainError(f"the chain loops at {cur!r}")
            seen.add(cur)
            order.append(by_name[cur])
            cur = by_name[cur].next
        if len(order) != len(by_name):
            raise ChainError(f"stages not reachable from {firsts[0]!r}: {sorted(set(by_name) - seen)}")
        pers = "".join("s" if st.per_scene else "j" for st in order)
        # The shape every job has: per-job set-up (which decides the scenes), scenes, per-job finish.
        if not pers.startswith("j") or not pers.endswith("j") or set(pers.strip("j")) != {"s"}:
            raise ChainError(f"the chain must be per-job stage(s), per-scene stage(s), per-job stage(s); got {pers}")
        tasks = [st.task for st in order]
        if len(set(tasks)) != len(tasks):
            raise ChainError("two stages share a task name")
        self.stages: tuple[StageDef, ...] = tuple(order)
        self._by_name = by_name
        self._by_task = {st.task: st for st in order}

    def __iter__(self) -> Iterator[StageDef]:
        return iter(self.stages)

    def __getitem__(self, name: str) -> StageDef:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no stage {name!r} in the chain ({', '.join(self.names)})") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(st.name for st in self.stages)

    def by_task(self, task: str) -> StageDef:
        return self._by_task[task]

    @property
    def first(self) -> StageDef:
        return self.stages[0]

    @property
    def scene_stages(self) -> tuple[StageDef, ...]:
        return tuple(st for st in self.stages if st.per_scene)

    @property
    def last_scene_stage(self) -> StageDef:
        return self.scene_stages[-1]

    @property
    def finisher(self) -> StageDef:
        """The per-job stage sent once every scene is finished (through the last per-scene stage, or failed)."""
        return self[self.last_scene_stage.next]

    def next_of(self, name: str) -> StageDef | None:
        nxt = self[name].next
        return self[nxt] if nxt else None

    def batch_size(self, name: str, settings) -> int:
        field = self[name].batch_size
        return int(getattr(settings, field)) if field else 1

    def with_stage(self, stage: StageDef, after: str) -> Chain:
        """A new chain with `stage` inserted right after stage `after`."""
        prev = self[after]
        stages = []
        for st in self.stages:
            if st.name == after:
                stages.append(replace(st, next=stage.name))
                stages.append(replace(stage, next=prev.next))
            else:
                stages.append(st)
        return Chain(stages)


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


DEFAULT_CHAIN = Chain([
    StageDef("association", TASK_ASSOCIATE, "job", keys.categories, next="layout",
             description="CNA: novel categories for the training categories; decides the job's scenes"),
    StageDef("layout", TASK_PLAN_LAYOUTS, "scene", keys.layout, next="synthesis", batch_size="layout_batch_size",
             description="a layout (boxes, caption) per scene"),
    StageDef("synthesis", TASK_RENDER, "scene", keys.image, next="annotation", batch_size="synthesis_batch_size",
             description="layout-to-image"),
    StageDef("annotation", TASK_ANNOTATE, "scene", keys.annotation, next="curation",
             batch_size="annotation_batch_size", description="masks and scores per instance"),
    StageDef("curation", TASK_CURATE_SCENES, "scene", keys.curated, next="assemble",
             batch_size="curation_batch_size",
             description="select instances, write the scene's curated record, thumbnail and export pieces"),
    StageDef("assemble", TASK_ASSEMBLE, "job", keys.dataset_manifest_for_job,
             description="stream the dataset's index files (COCO JSON, card...) from the curated records; "
                         "finishes the job"),
])
