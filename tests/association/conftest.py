"""Fixtures of the LLM association tests: a scripted OpenAI-compatible server on loopback, settings
that point at it, and the backends built through their production `from_settings` path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # fake_openai_server, also used by bench/llm.py

from fake_openai_server import FakeOpenAIServer  # noqa: E402


@pytest.fixture(scope="session")
def fake_llm_server():
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


@pytest.fixture
def fake_llm(fake_llm_server):
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture
def llm_env(fake_llm, monkeypatch):
    """The environment a deployment sets for the association worker, pointed at the fake server; fast
    retries so fault tests stay quick."""
    env = {
        "DREAMMASK_LLM_BASE_URL": fake_llm.base_url,
        "DREAMMASK_LLM_MODEL": "fake-model",
        "DREAMMASK_LLM_API_KEY": "test-key",
        "DREAMMASK_LLM_TIMEOUT_S": "5",
        "DREAMMASK_LLM_BACKOFF_BASE_S": "0.01",
        "DREAMMASK_LLM_BACKOFF_MAX_S": "0.2",
        "DREAMMASK_LLM_MAX_RETRIES": "2",
        "DREAMMASK_CNA_ROUNDS": "3",
        "DREAMMASK_CNA_MIN_SUPPORT": "2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def core_settings(llm_env):
    from dreammask.shared.settings import Settings

    return Settings()


@pytest.fixture(scope="session")
def embedder():
    from dreammask.services.association.embedding_model import get_text_embedder
    from dreammask.shared.settings import Settings

    return get_text_embedder(Settings())


@pytest.fixture
def llm_association(core_settings, embedder):
    from dreammask.services.association.backends.llm import LLMAssociation

    backend = LLMAssociation.from_settings(core_settings)
    backend.warmup()
    yield backend
    backend.close()


@pytest.fixture
def llm_layout(core_settings):
    from dreammask.services.association.backends.llm import LLMLayoutPlanner

    backend = LLMLayoutPlanner.from_settings(core_settings)
    yield backend
    backend.close()
