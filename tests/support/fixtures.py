"""Pytest fixtures around the fake OpenAI server and the LLM layer, for any test module:

from tests.support.fixtures import fake_openai, fake_openai_server  # noqa: F401

async def test_x(fake_openai):
    llm = build_llm_client(settings_for(fake_openai, llm_retries=0))
"""

from __future__ import annotations

import pytest

from services.common.llm import Endpoint, LLMSettings
from tests.support.fake_openai import FakeOpenAIServer

FAKE_KEY_ENV = "FAKE_API_KEY"


@pytest.fixture(scope="session")
def fake_openai_server():
    """One server (a thread) for the session; use `fake_openai` for a clean one per test."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def fake_openai(fake_openai_server):
    """The session's server with no script, requests or bills left from other tests."""
    fake_openai_server.reset()
    yield fake_openai_server
    fake_openai_server.reset()


def settings_for(server: FakeOpenAIServer, **overrides) -> LLMSettings:
    """Settings whose `fake/...` models go to `server` through the lean path and `lite/...`
    models through LiteLLM, keyed by FAKE_API_KEY; simulated models instant."""
    values = {
        "llm_allowed_models": ["sim/*", "fake/*", "lite/*"],
        "llm_endpoints": {
            "fake": Endpoint(api_base=server.base_url, api_key_env=FAKE_KEY_ENV),
            "lite": Endpoint(api_base=server.base_url, api_key_env=FAKE_KEY_ENV, transport="litellm"),
        },
        "sim_first_token_latency": 0,
        "sim_tokens_per_second": 0,
    }
    values.update(overrides)
    return LLMSettings(**values)


def parametrize_delivery(metafunc) -> None:
    """For a test module's `pytest_generate_tests`: each test whose code calls `collect(` runs
    twice, reading the whole stream through `llm.stream` ("pull") and through `stream_to`
    ("push", the lean providers' deltas handed on inside the network read's callback); the
    module's `collect` is swapped by the `delivery` fixture."""
    import inspect

    if "collect(" in inspect.getsource(metafunc.function):
        metafunc.fixturenames.append("delivery")
        metafunc.parametrize("delivery", ["pull", "push"], indirect=True)


@pytest.fixture
def delivery(request, monkeypatch):
    """See parametrize_delivery."""
    import functools

    from services.common.llm import collect

    if request.param == "push":
        monkeypatch.setattr(request.module, "collect", functools.partial(collect, push=True))
    return request.param
