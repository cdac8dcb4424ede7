"""Settings of the LLM layer: a mixin the judge and orchestrator settings inherit.

    class JudgeSettings(LLMSettings, ServiceSettings): ...

Every field has a default that works offline (the simulated models). Environment variables
are the field names in upper case: LLM_ALLOWED_MODELS, LLM_FIRST_TOKEN_TIMEOUT,
SIM_TOKENS_PER_SECOND, ... Lists accept JSON or a comma-separated string; mappings are JSON:

    LLM_ALLOWED_MODELS='sim/*,openai/gpt-4o-mini,local/*'
    LLM_ENDPOINTS='{"local": {"api_base": "http://127.0.0.1:8000/v1", "api_key_env": "LOCAL_API_KEY"}}'
    LLM_FALLBACKS='{"openai/gpt-4o": ["anthropic/claude-sonnet-4-5"]}'

Keys are not fields: an endpoint names the environment variable that holds its key
(`api_key_env`), and the settings read those variables (and OPENAI_API_KEY) once, when they
are built, into a mapping of secrets that `provider_key(name)` answers from.
"""

from __future__ import annotations

import fnmatch
import json
import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.common.settings import SuiteSettings

# The key of openai/* models on the lean path (LiteLLM reads the other providers' own variables).
OPENAI_KEY_ENV = "OPENAI_API_KEY"

DEFAULT_ALLOWED_MODELS = (
    "sim/*",
    "openai/gpt-4o",
    "openai/gpt-4o-mini",
    "openai/gpt-4.1",
    "openai/gpt-4.1-mini",
    "openai/gpt-4.1-nano",
    "openai/gpt-5",
    "openai/gpt-5-mini",
    "openai/gpt-5-nano",
    "anthropic/claude-sonnet-4-5*",
    "anthropic/claude-haiku-4-5*",
    "anthropic/claude-3-5-haiku*",
    "gemini/gemini-2.5-flash",
    "gemini/gemini-2.5-pro",
    "ollama/*",
)


class Endpoint(BaseModel):
    """An OpenAI-compatible endpoint; models named `<name>/<model>` are sent to it."""

    api_base: str = Field(description="e.g. http://127.0.0.1:8000/v1 (…/chat/completions is appended)")
    api_key_env: str | None = Field(None, description="environment variable holding the key, if any")
    # "lean": our httpx SSE reader (near the floor of CPU per chunk); "litellm": LiteLLM's
    # OpenAI-compatible provider (kept for comparison and for servers the lean path trips on).
    transport: Literal["lean", "litellm"] = "lean"


class LLMSettings(SuiteSettings):
    """The LLM layer's knobs (see the module docstring for the environment format)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Provider keys by the name of the variable that holds them, read in model_post_init.
    _provider_keys: dict[str, SecretStr] = PrivateAttr(default_factory=dict)

    llm_allowed_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_MODELS),
        description="models a request may name; fnmatch patterns (sim/*) allowed",
    )
    llm_endpoints: dict[str, Endpoint] = Field(
        default_factory=dict, description="OpenAI-compatible endpoints by model prefix (JSON)"
    )
    llm_openai_lean: bool = Field(
        True, description="send openai/* models through the lean SSE path (False: through LiteLLM)"
    )
    llm_openai_api_base: str = Field("https://api.openai.com/v1", description="api_base of openai/* models")
    llm_fallbacks: dict[str, list[str]] = Field(
        default_factory=dict, description="model -> alternative models tried in order (JSON)"
    )
    llm_first_token_timeout: float = Field(30.0, gt=0, description="seconds from the request to the first token")
    llm_stall_timeout: float = Field(
        15.0, gt=0, description="inter-chunk watchdog: seconds without a chunk before a stream is cut"
    )
    llm_connect_timeout: float = Field(10.0, gt=0, description="seconds to open a connection")
    llm_retries: int = Field(2, ge=0, description="retries of one model before its first token")
    llm_backoff_base: float = Field(0.5, ge=0, description="first retry delay in seconds, doubled each retry")
    llm_backoff_max: float = Field(8.0, ge=0, description="cap of a retry delay, Retry-After included")
    sim_first_token_latency: float = Field(
        0.3, ge=0, description="simulated models: seconds before the first token (0: instant)"
    )
    sim_tokens_per_second: float = Field(
        60.0, ge=0, description="simulated models: pacing after the first token (0: instant)"
    )
    sim_seed: int = Field(0, description="seed of simulated models when a request gives none")

    @field_validator("llm_allowed_models", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        names = {OPENAI_KEY_ENV, *(e.api_key_env for e in self.llm_endpoints.values() if e.api_key_env)}
        self._provider_keys = {name: SecretStr(os.environ[name]) for name in sorted(names) if name in os.environ}

    def provider_key(self, name: str | None) -> str | None:
        """The key held by the variable `name` when these settings were built (None: unset)."""
        key = self._provider_keys.get(name) if name else None
        return None if key is None else key.get_secret_value()

    def model_allowed(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.llm_allowed_models)
