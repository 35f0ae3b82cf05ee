"""What a worker preloads at start is derived from the chain: the backend packages imported are those of the
services whose stages draw from a registry, and a service's worker preloads the configured backends of the
registries its own stages in the chain draw from (`StageDef.backends`), so a stage moved or added needs no
second list."""

from __future__ import annotations

import importlib
from dataclasses import replace

from dreammask.shared import provenance, worker
from dreammask.shared.chain import DEFAULT_CHAIN, Chain, StageDef
from dreammask.shared.registry import BUILTIN_BACKEND_PACKAGES, backend_packages
from dreammask.shared.settings import Settings


def test_builtin_backend_packages_follow_the_chain():
    assert BUILTIN_BACKEND_PACKAGES == ("dreammask.services.association.backends",
                                        "dreammask.services.synthesis.backends",
                                        "dreammask.services.annotation.backends")
    for package in BUILTIN_BACKEND_PACKAGES:
        importlib.import_module(package)
    stamp = StageDef("stamp", "curation", "stamp", "scene", "dreammask.services.curation.stage:curate_scenes_work",
                     "stamps/{scene}.json", backends=("stamper",))
    chain = DEFAULT_CHAIN.with_stage(stamp, after="curation")
    assert backend_packages(chain) == (*BUILTIN_BACKEND_PACKAGES, "dreammask.services.curation.backends")


def _preloading(monkeypatch, entries):
    built = []
    monkeypatch.setattr(worker, "get_settings", lambda: Settings(preload_backends=entries))
    monkeypatch.setattr(worker, "get_backend", lambda stage, name, s: built.append(f"{stage}:{name}") or object())
    monkeypatch.setattr(provenance, "environment", lambda backend: {})
    return built


def test_a_worker_preloads_the_backends_of_the_stages_it_runs_in_its_chain(monkeypatch):
    entries = ["association:embedding", "masks:grabcut", "synthesis:preview", "scores:geometric"]
    built = _preloading(monkeypatch, entries)
    assert worker.preload("annotation") == ["masks:grabcut", "scores:geometric"]
    assert worker.preload("curation") == [] and worker.preload("training") == []
    assert built == ["masks:grabcut", "scores:geometric"]

    # The annotation stage run by the synthesis workers: they, not the annotation workers, load its models.
    moved = Chain([replace(st, service="synthesis") if st.name == "annotation" else st for st in DEFAULT_CHAIN])
    assert worker.preload("synthesis", moved) == ["masks:grabcut", "synthesis:preview", "scores:geometric"]
    assert worker.preload("annotation", moved) == []
