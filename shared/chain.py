"""The stage chain, declared once. `StageDef` is the one contract of a stage: its name, the service (hence
worker, queue and task name) that runs it, its work (`handler`), per scene or per job, the salt of its
random stream, the setting that sizes its batches, where its output lives, and the stage that follows.

Everything else is derived from the declarations, never written out beside them: the Celery tasks each worker
registers (`shared/worker.py`), the in-process runner (`services/cli/inprocess.py`), the harness's worker
processes, routing and queues (`shared/celery_app.py`, `shared/registry.py`), the backend packages imported and the
backends each worker preloads (`shared/registry.py`, `shared/worker.py`), per-stage seeds
(`shared/seeding.py`, recorded in the job's plan), the skeleton that sends the next stage's messages and
triggers the per-job stage after the last scene (`shared/skeleton.py`), `resume` (`shared/orchestration.py`),
progress counts (`shared/jobs.py`) and the API's and CLI's per-stage listings. Stage modules hold only
their work.

How to add a stage: docs/extending.md.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from . import keys

Scope = Literal["scene", "job"]
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class StageDef:
    """One link of the chain.

    `service` is the folder under services/ whose worker runs the stage; its queue is the service's (one
    queue per service) and its task is named `dreammask.<service>.<verb>`. `handler` ("module:function")
    is the stage's work: `(runtime, job_id, scene_ids) -> SceneResult` for a per-scene stage,
    `(runtime, job_id) -> JobResult` for a per-job one; the skeleton does everything else around it.
    `output` is the key of the stage's output: `output(job_id, scene_id)` for a per-scene stage (its
    existence makes the stage skip that scene), `output(job_id)` for a per-job stage (its existence counts
    the stage done). Declare it as a function (`shared/keys.py`) or as a path inside the job's folder,
    `"stamps/{scene}.json"` (per scene) or `"report.json"` (per job), which becomes that function. `batch_size` names the `Settings` field that sizes the batches sent to this stage.
    `seed_salt` gives a stage that draws random numbers its own stream per scene (`shared/seeding.py`);
    `backends` names the backend registries it draws from (`shared/registry.py`), so their preloading
    happens on its service's workers."""

    name: str
    service: str
    verb: str
    scope: Scope
    handler: str
    output: Callable[..., str] | str
    next: str | None = None
    batch_size: str | None = None
    seed_salt: int | None = None
    backends: tuple[str, ...] = ()
    description: str = ""
    _work: list = field(default_factory=list, init=False, repr=False, compare=False)  # the handler, once resolved

    def __post_init__(self):
        if isinstance(self.output, str):
            object.__setattr__(self, "output", _job_key(self.name, self.scope, self.output))

    @property
    def task(self) -> str:
        return f"dreammask.{self.service}.{self.verb}"

    @property
    def queue(self) -> str:
        return self.service

    @property
    def per_scene(self) -> bool:
        return self.scope == "scene"

    @property
    def work(self) -> Callable[..., Any]:
        """The handler, imported on first use (a process imports only the stages it runs)."""
        if not self._work:
            module, _, attr = self.handler.partition(":")
            try:
                fn = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise ChainError(f"stage {self.name!r}: handler {self.handler!r} cannot be imported: {e}") from e
            self._work.append(fn)
        return self._work[0]

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
            _check_stage(st)
            if st.name in by_name:
                raise ChainError(f"stage {st.name!r} is declared twice")
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
        salts = [st.seed_salt for st in order if st.seed_salt is not None]
        if len(set(salts)) != len(salts):
            raise ChainError("two stages share a seed salt: their random streams would be the same")
        backends = [b for st in order for b in st.backends]
        if len(set(backends)) != len(backends):
            raise ChainError("a backend registry is claimed by two stages")
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
    def services(self) -> tuple[str, ...]:
        """The services that run the chain's stages, in chain order (each has a worker and a queue)."""
        return tuple(dict.fromkeys(st.service for st in self.stages))

    def stages_of(self, service: str) -> tuple[StageDef, ...]:
        return tuple(st for st in self.stages if st.service == service)

    def seed_salt(self, name: str) -> int:
        salt = self[name].seed_salt
        if salt is None:
            raise ChainError(f"stage {name!r} declares no seed_salt: it draws no random numbers of its own")
        return salt

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
        setting = self[name].batch_size
        return int(getattr(settings, setting)) if setting else 1

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


def _job_key(stage: str, scope: str, template: str) -> Callable[..., str]:
    """The output key function of a path inside the job's folder ("stamps/{scene}.json")."""
    per_scene = "{scene}" in template
    if per_scene != (scope == "scene") or template.replace("{scene}", "").count("{") or template.startswith("/"):
        raise ChainError(f"stage {stage!r}: output {template!r} must be a path inside the job's folder, with "
                         "{scene} exactly where a per-scene stage's key names the scene (and nowhere for a "
                         "per-job stage)")
    if per_scene:
        return lambda job_id, scene_id: keys.job_prefix(job_id) + template.format(
            scene=keys.check_id(scene_id, "scene id"))
    return lambda job_id: keys.job_prefix(job_id) + template


def _check_stage(st: StageDef) -> None:
    from .settings import Settings

    for what, value in (("name", st.name), ("service", st.service), ("verb", st.verb)):
        if not isinstance(value, str) or not _NAME_RE.match(value):
            raise ChainError(f"stage {st.name!r}: {what} {value!r} must be a lower-case identifier")
    if st.scope not in ("scene", "job"):
        raise ChainError(f"stage {st.name!r}: scope must be 'scene' or 'job', not {st.scope!r}")
    module, sep, attr = st.handler.partition(":")
    if not (module and sep and attr):
        raise ChainError(f"stage {st.name!r}: handler {st.handler!r} must be 'module:function'")
    if st.batch_size is not None and st.batch_size not in Settings.model_fields:
        raise ChainError(f"stage {st.name!r}: batch_size {st.batch_size!r} is not a Settings field")
    if st.seed_salt is not None and (not isinstance(st.seed_salt, int) or st.seed_salt < 1):
        raise ChainError(f"stage {st.name!r}: seed_salt must be a positive integer")


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


_S = "dreammask.services"

DEFAULT_CHAIN = Chain([
    StageDef("association", "association", "associate", "job", f"{_S}.association.stage:associate_work",
             keys.plan, next="layout", backends=("association",),
             description="CNA: novel categories for the training categories; writes the job's plan (its scenes)"),
    StageDef("layout", "association", "plan_layouts", "scene", f"{_S}.association.stage:plan_layouts_work",
             keys.layout, next="synthesis", batch_size="layout_batch_size", seed_salt=1, backends=("layout",),
             description="a layout (boxes, caption) per scene"),
    StageDef("synthesis", "synthesis", "render", "scene", f"{_S}.synthesis.stage:render_work",
             keys.image, next="annotation", batch_size="synthesis_batch_size", seed_salt=2,
             backends=("synthesis",), description="layout-to-image"),
    StageDef("annotation", "annotation", "annotate", "scene", f"{_S}.annotation.stage:annotate_work",
             keys.annotation, next="curation", batch_size="annotation_batch_size", backends=("masks", "scores"),
             description="masks and scores per instance"),
    StageDef("curation", "curation", "curate_scenes", "scene", f"{_S}.curation.stage:curate_scenes_work",
             keys.curated, next="assemble", batch_size="curation_batch_size",
             description="select instances, write the scene's curated record, thumbnail and export pieces"),
    StageDef("assemble", "curation", "assemble", "job", f"{_S}.curation.stage:assemble_work",
             keys.dataset_manifest_for_job,
             description="stream the dataset's index files (COCO JSON, card...) from the curated records; "
                         "finishes the job"),
])
