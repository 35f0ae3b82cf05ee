"""The chain declaration: its shape is validated, inserting a stage relinks its neighbours, and what other
modules used to write out beside the chain (queues, backend routing, seed salts, worker services) is derived
from it."""

from __future__ import annotations

import re

import pytest

from dreammask.shared import keys
from dreammask.shared.chain import DEFAULT_CHAIN, Chain, ChainError, StageDef
from dreammask.shared.settings import EMBEDDED_BACKENDS, Settings

H = "dreammask.services.curation.stage:curate_scenes_work"  # any importable handler


def _stamp(**kw) -> StageDef:
    return StageDef("stamp", "curation", "stamp", "scene", H,
                    lambda job, sid: keys.job_prefix(job) + f"stamps/{sid}.json",
                    batch_size="annotation_batch_size", **kw)


def test_default_chain_order_queues_and_finisher():
    assert DEFAULT_CHAIN.names == ("association", "layout", "synthesis", "annotation", "curation", "assemble")
    assert [st.queue for st in DEFAULT_CHAIN] == ["association", "association", "synthesis", "annotation", "curation",
                                                  "curation"]
    assert [st.task for st in DEFAULT_CHAIN] == [
        "dreammask.association.associate", "dreammask.association.plan_layouts", "dreammask.synthesis.render",
        "dreammask.annotation.annotate", "dreammask.curation.curate_scenes", "dreammask.curation.assemble"]
    assert DEFAULT_CHAIN.first.name == "association"
    assert [st.name for st in DEFAULT_CHAIN.scene_stages] == ["layout", "synthesis", "annotation", "curation"]
    assert DEFAULT_CHAIN.finisher.name == "assemble"
    assert DEFAULT_CHAIN.batch_size("synthesis", Settings(synthesis_batch_size=7)) == 7
    assert DEFAULT_CHAIN.services == ("association", "synthesis", "annotation", "curation")


def test_every_handler_resolves_to_a_function():
    for st in DEFAULT_CHAIN:
        assert callable(st.work), st.name


def test_routing_queues_seeds_and_backends_are_derived_from_the_declarations():
    from dreammask.services.cli.harness import SERVICES
    from dreammask.shared.celery_app import QUEUES, queue_of
    from dreammask.shared.registry import BACKEND_STAGES, QUEUE_OF_STAGE
    from dreammask.shared.schemas import Backends
    from dreammask.shared.seeding import SALTS

    assert QUEUES == (*DEFAULT_CHAIN.services, "training", "loop") and SERVICES == DEFAULT_CHAIN.services
    assert all(queue_of(st.task) == st.queue for st in DEFAULT_CHAIN)
    assert QUEUE_OF_STAGE == {"association": "association", "layout": "association", "synthesis": "synthesis",
                              "masks": "annotation", "scores": "annotation"}
    # The job spec's backend choice and the embedded defaults name exactly the declared registries.
    assert set(BACKEND_STAGES) == set(Backends.model_fields) == set(EMBEDDED_BACKENDS)
    assert SALTS == {"layout": 1, "synthesis": 2}


def test_inserting_a_stage_relinks_the_chain():
    chain = DEFAULT_CHAIN.with_stage(_stamp(), after="curation")
    assert chain.names == ("association", "layout", "synthesis", "annotation", "curation", "stamp", "assemble")
    assert chain["curation"].next == "stamp" and chain["stamp"].next == "assemble"
    assert chain.last_scene_stage.name == "stamp" and chain.finisher.name == "assemble"
    assert chain["stamp"].output_prefix("j1") == ("jobs/j1/stamps/", ".json")
    assert chain["stamp"].task == "dreammask.curation.stamp" and chain.stages_of("curation")[1].name == "stamp"
    assert DEFAULT_CHAIN["curation"].next == "assemble"  # the default is untouched


def _job(name, nxt=None, **kw):
    return StageDef(name, "curation", name, "job", H, keys.categories, next=nxt, **kw)


def _scene(name, nxt=None, **kw):
    return StageDef(name, "curation", name, "scene", H, keys.layout, next=nxt, **kw)


@pytest.mark.parametrize("stages, message", [
    ([_job("a", "b"), _scene("b", "zzz")], "unknown stage 'zzz'"),
    ([_job("a", "b"), _job("b")], "per-scene stage"),
    ([_job("a", "b"), _scene("b", "a")], "first stage"),
    ([StageDef("a", "Nowhere!", "a", "job", H, keys.categories)], "service 'Nowhere!'"),
    ([StageDef("a", "curation", "a", "job", "no_colon", keys.categories)], "module:function"),
    ([StageDef("a", "curation", "a", "each", H, keys.categories)], "scope must be"),
    ([_job("a", "b"), _scene("b", "c", batch_size="no_such_setting"), _job("c")], "not a Settings field"),
    ([_job("a", "b"), _scene("b", "c", seed_salt=3), _scene("c", "d", seed_salt=3), _job("d")], "seed salt"),
])
def test_a_malformed_chain_is_refused_with_the_reason(stages, message):
    with pytest.raises(ChainError, match=re.escape(message)):
        Chain(stages)


def test_a_handler_that_does_not_import_says_which_stage():
    st = StageDef("b", "curation", "b", "scene", "dreammask.services.curation.stage:no_such_function", keys.layout)
    with pytest.raises(ChainError, match="stage 'b': handler .*no_such_function"):
        st.work  # noqa: B018


def test_an_output_declared_as_a_path_in_the_job_folder():
    st = StageDef("stamp", "curation", "stamp", "scene", H, "stamps/{scene}.json")
    assert st.output("j1", "s00003") == "jobs/j1/stamps/s00003.json"
    assert st.output_prefix("j1") == ("jobs/j1/stamps/", ".json")
    with pytest.raises(ValueError, match="invalid scene id"):
        st.output("j1", "../x")
    assert StageDef("report", "curation", "report", "job", H, "report.json").output("j1") == "jobs/j1/report.json"
    for scope, template in (("scene", "stamps.json"), ("job", "stamps/{scene}.json"), ("scene", "x/{job}/{scene}")):
        with pytest.raises(ChainError, match="inside the job's folder"):
            StageDef("bad", "curation", "bad", scope, H, template)
