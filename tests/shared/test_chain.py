"""The chain declaration: its shape is validated, and inserting a stage relinks its neighbours."""

from __future__ import annotations

import pytest

from dreammask.shared import keys
from dreammask.shared.chain import DEFAULT_CHAIN, Chain, ChainError, StageDef
from dreammask.shared.settings import Settings


def _stamp() -> StageDef:
    return StageDef("stamp", "dreammask.curation.stamp", "scene",
                    lambda job, sid: keys.job_prefix(job) + f"stamps/{sid}.json", batch_size="annotation_batch_size")


def test_default_chain_order_queues_and_finisher():
    assert DEFAULT_CHAIN.names == ("association", "layout", "synthesis", "annotation", "curation", "assemble")
    assert [st.queue for st in DEFAULT_CHAIN] == ["association", "association", "synthesis", "annotation", "curation",
                                                  "curation"]
    assert DEFAULT_CHAIN.first.name == "association"
    assert [st.name for st in DEFAULT_CHAIN.scene_stages] == ["layout", "synthesis", "annotation", "curation"]
    assert DEFAULT_CHAIN.finisher.name == "assemble"
    assert DEFAULT_CHAIN.batch_size("synthesis", Settings(synthesis_batch_size=7)) == 7


def test_inserting_a_stage_relinks_the_chain():
    chain = DEFAULT_CHAIN.with_stage(_stamp(), after="curation")
    assert chain.names == ("association", "layout", "synthesis", "annotation", "curation", "stamp", "assemble")
    assert chain["curation"].next == "stamp" and chain["stamp"].next == "assemble"
    assert chain.last_scene_stage.name == "stamp" and chain.finisher.name == "assemble"
    assert chain["stamp"].output_prefix("j1") == ("jobs/j1/stamps/", ".json")
    assert DEFAULT_CHAIN["curation"].next == "assemble"  # the default is untouched


@pytest.mark.parametrize("stages, message", [
    ([StageDef("a", "dreammask.curation.a", "job", keys.categories, next="b"),
      StageDef("b", "dreammask.curation.b", "scene", keys.layout, next="zzz")], "unknown stage 'zzz'"),
    ([StageDef("a", "dreammask.curation.a", "job", keys.categories, next="b"),
      StageDef("b", "dreammask.curation.b", "job", keys.spec)], "per-scene stage"),
    ([StageDef("a", "dreammask.nowhere.a", "job", keys.categories)], "dreammask.<service>.<verb>"),
    ([StageDef("a", "dreammask.curation.a", "job", keys.categories, next="b"),
      StageDef("b", "dreammask.curation.b", "scene", keys.layout, next="a")], "first stage"),
])
def test_a_malformed_chain_is_refused_with_the_reason(stages, message):
    with pytest.raises((ChainError, ValueError), match=message.replace(".", r"\.").replace("<", ".").replace(">", ".")):
        Chain(stages)
