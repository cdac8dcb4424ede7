"""LLMSettings: offline defaults, environment names, the mixin with ServiceSettings, the router's dispatch."""

from __future__ import annotations

from services.common.llm import LLMSettings, build_llm_client
from services.common.llm.simulated import SimulatedLLM
from services.common.settings import ServiceSettings, load_settings


class ExampleSettings(LLMSettings, ServiceSettings):
    pass


def test_defaults_work_offline():
    settings = LLMSettings()
    assert settings.model_allowed("sim/debater") and settings.model_allowed("sim/judge")
    assert settings.model_allowed("openai/gpt-4o-mini")
    assert not settings.model_allowed("openai/gpt-4-32k") and not settings.model_allowed("evil/anything")
    assert settings.llm_endpoints == {} and settings.llm_fallbacks == {}


def test_environment_and_flags(monkeypatch):
    monkeypatch.setenv("LLM_ALLOWED_MODELS", "sim/*, local/*")
    monkeypatch.setenv(
        "LLM_ENDPOINTS", '{"local": {"api_base": "http://127.0.0.1:9/v1", "api_key_env": "LOCAL_API_KEY"}}'
    )
    monkeypatch.setenv("LLM_FALLBACKS", '{"local/a": ["local/b"]}')
    monkeypatch.setenv("LLM_FIRST_TOKEN_TIMEOUT", "7.5")
    monkeypatch.setenv("SIM_TOKENS_PER_SECOND", "0")
    monkeypatch.setenv("PORT", "1234")
    settings = load_settings(ExampleSettings, ["--llm-stall-timeout", "3", "--sim-seed", "42"])
    assert settings.llm_allowed_models == ["sim/*", "local/*"]
    assert settings.llm_endpoints["local"].api_key_env == "LOCAL_API_KEY"
    assert settings.llm_endpoints["local"].transport == "lean"
    assert settings.llm_fallbacks == {"local/a": ["local/b"]}
    assert (settings.llm_first_token_timeout, settings.llm_stall_timeout) == (7.5, 3.0)
    assert (settings.sim_tokens_per_second, settings.sim_seed, settings.port) == (0.0, 42, 1234)
    monkeypatch.setenv("LLM_ALLOWED_MODELS", '["sim/debater"]')
    assert LLMSettings().llm_allowed_models == ["sim/debater"]


def test_dispatch_by_model_name():
    settings = LLMSettings(
        llm_endpoints={"local": {"api_base": "http://127.0.0.1:9/v1"}},
        llm_allowed_models=["sim/*", "local/*", "openai/*"],
    )
    llm = build_llm_client(settings)
    from services.common.llm.openai_compat import OpenAICompatProvider

    assert isinstance(llm.provider_for("sim/debater"), SimulatedLLM)
    local = llm.provider_for("local/qwen")
    assert isinstance(local, OpenAICompatProvider) and local.url == "http://127.0.0.1:9/v1/chat/completions"
    openai = llm.provider_for("openai/gpt-4o")
    assert isinstance(openai, OpenAICompatProvider) and openai.api_key_env == "OPENAI_API_KEY"
    from services.common.llm import ChatMessage, CompletionRequest

    body = openai._body(
        CompletionRequest("openai/gpt-5-mini", (ChatMessage("user", "hi"),), max_tokens=9, temperature=0)
    )
    assert body["max_completion_tokens"] == 9 and "temperature" not in body and body["model"] == "gpt-5-mini"
    body = local._body(CompletionRequest("local/qwen", (), max_tokens=9, temperature=0, seed=3))
    assert (body["max_tokens"], body["temperature"], body["seed"], body["model"]) == (9, 0, 3, "qwen")
    anthropic = llm.provider_for("anthropic/claude-haiku-4-5")
    assert type(anthropic).__name__ == "AnthropicProvider" and anthropic.url == "https://api.anthropic.com/v1/messages"
    assert anthropic.api_key_env == "ANTHROPIC_API_KEY"
    litellm = build_llm_client(settings.model_copy(update={"llm_anthropic_lean": False}))
    assert type(litellm.provider_for("anthropic/claude-haiku-4-5")).__name__ == "LiteLLMProvider"
    assert type(llm.provider_for("gemini/gemini-2.5-flash")).__name__ == "LiteLLMProvider"
    assert llm.candidates("local/a") == ["local/a"]


def test_fallbacks_outside_the_allowlist_are_skipped():
    settings = LLMSettings(llm_allowed_models=["sim/*"], llm_fallbacks={"sim/a": ["sim/b", "openai/gpt-4o", "sim/a"]})
    assert build_llm_client(settings).candidates("sim/a") == ["sim/a", "sim/b"]
