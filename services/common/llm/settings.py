"""Settings of the LLM layer: a mixin the judge and orchestrator settings inherit.

    class JudgeSettings(LLMSettings, ServiceSettings): ...

Every field has a default that works offline (the simulated models). Environment variables
are the field names in upper case: LLM_ALLOWED_MODELS, LLM_FIRST_TOKEN_TIMEOUT,
SIM_TOKENS_PER_SECOND, ... Lists accept JSON or a comma-separated string; mappings are JSON:

    LLM_ALLOWED_MODELS='sim/*,openai/gpt-4o-mini,local/*'
    LLM_ENDPOINTS='{"local": {"api_base": "http://127.0.0.1:8000/v1", "api_key_env": "LOCAL_API_KEY",
                   "price": {"input_per_million": "0", "output_per_million": "0"}}}'
    LLM_FALLBACKS='{"openai/gpt-4o": ["anthropic/claude-sonnet-4-5"]}'

An endpoint may declare its price (USD per million tokens, plain decimal strings; "0" suits a
self-hosted server): its models are then priced as declared, with the price source
"declared-<endpoint>". Without one, a model of the endpoint is priced only when the price data
knows its name, and a debate naming an unpriced model is refused when it is created.
`EndpointSettings` holds the endpoints alone, for the accounting service, which prices but
calls no model: every service reads the same LLM_ENDPOINTS, so all price alike.

Keys are not fields: an endpoint names the environment variable that holds its key
(`api_key_env`), and the settings read those variables (and OPENAI_API_KEY) once, when they
are built, into a mapping of secrets that `provider_key(name)` answers from. For the providers
LiteLLM serves, the settings also note, once, which of their usual variables
(`PROVIDER_KEY_ENVS`) are set, so that `missing_key_env(model)` can name the variable a model
lacks before any call is made.
"""

from __future__ import annotations

import fnmatch
import json
import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.common.money import AmountError, parse_amount
from services.common.pricing import Rates, rates_per_million
from services.common.settings import SuiteSettings

# The keys of openai/* and anthropic/* models on the lean path (LiteLLM reads the other
# providers' own variables).
OPENAI_KEY_ENV = "OPENAI_API_KEY"
ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY"

# The variables LiteLLM reads a provider's key from, by model prefix: any one of them set is
# enough. They are those `litellm.validate_environment` asks for (tests/unit/test_prespend_rules.py
# checks each entry against it), for the providers of the default allowlist and the common
# hosted ones. A prefix not listed here is not checked before a call (ollama needs no key; an
# unknown provider answers 401, which is not billed). Kept here rather than asked of LiteLLM:
# its helper reads os.environ at each call, and importing LiteLLM takes seconds.
PROVIDER_KEY_ENVS: dict[str, tuple[str, ...]] = {
    "openai": (OPENAI_KEY_ENV,),
    "anthropic": (ANTHROPIC_KEY_ENV, "ANTHROPIC_AUTH_TOKEN"),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "perplexity": ("PERPLEXITYAI_API_KEY",),
    "together_ai": ("TOGETHERAI_API_KEY",),
}
SIMULATED_PREFIX = "sim"

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


class DeclaredPrice(BaseModel):
    """The price of an endpoint's models, USD per million tokens, as plain decimal strings
    ("0" for a self-hosted server; the parser of services/common/money.py, so no exponent and
    at most 12 digits after the point). Unset optional rates fall back as in pricing.py."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: str
    output_per_million: str
    cached_input_per_million: str | None = None
    reasoning_per_million: str | None = None
    cache_creation_input_per_million: str | None = None

    @field_validator("*")
    @classmethod
    def _plain_decimal(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_amount(value)
            except AmountError as error:
                raise ValueError(f"{value!r} {error}") from None
        return value

    def rates(self) -> Rates:
        return rates_per_million(self.model_dump(exclude_none=True))


class Endpoint(BaseModel):
    """An OpenAI-compatible endpoint; models named `<name>/<model>` are sent to it."""

    api_base: str = Field(description="e.g. http://127.0.0.1:8000/v1 (…/chat/completions is appended)")
    api_key_env: str | None = Field(None, description="environment variable holding the key, if any")
    # "lean": our own SSE reader on httptools (near the floor of CPU per chunk, openai_compat.py);
    # "httpx": the same reader's events on httpx, as before issue 16 (openai_httpx.py); "litellm":
    # LiteLLM's OpenAI-compatible provider. The last two are kept for comparison and for servers
    # the lean path trips on.
    transport: Literal["lean", "httpx", "litellm"] = "lean"
    price: DeclaredPrice | None = Field(
        None, description="the price of the endpoint's models (source declared-<name>); none: the price data's"
    )


class EndpointSettings(SuiteSettings):
    """LLM_ENDPOINTS alone: what a service that prices, but calls no model, needs (accounting)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    llm_endpoints: dict[str, Endpoint] = Field(
        default_factory=dict, description="OpenAI-compatible endpoints by model prefix (JSON)"
    )

    def declared_prices(self) -> dict[str, Rates]:
        """Rates by endpoint name, for the endpoints that declare a price (PriceBook(declared=...))."""
        return {name: e.price.rates() for name, e in self.llm_endpoints.items() if e.price is not None}


class LLMSettings(EndpointSettings):
    """The LLM layer's knobs (see the module docstring for the environment format)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Provider keys by the name of the variable that holds them, read in model_post_init.
    _provider_keys: dict[str, SecretStr] = PrivateAttr(default_factory=dict)
    # Which variables of PROVIDER_KEY_ENVS are set (not empty), read in model_post_init.
    _key_envs_set: frozenset[str] = PrivateAttr(default_factory=frozenset)

    llm_allowed_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_MODELS),
        description="models a request may name; fnmatch patterns (sim/*) allowed",
    )
    llm_openai_lean: bool = Field(
        True, description="send openai/* models through the lean SSE path (False: through LiteLLM)"
    )
    llm_openai_api_base: str = Field("https://api.openai.com/v1", description="api_base of openai/* models")
    llm_anthropic_lean: bool = Field(
        True,
        description="send anthropic/* models through the lean path, Anthropic's Messages stream with "
        "ANTHROPIC_API_KEY (False: through LiteLLM, which also reads ANTHROPIC_AUTH_TOKEN and ANTHROPIC_API_BASE)",
    )
    llm_anthropic_api_base: str = Field(
        "https://api.anthropic.com", description="api_base of anthropic/* models on the lean path (…/v1/messages)"
    )
    llm_fallbacks: dict[str, list[str]] = Field(
        default_factory=dict, description="model -> alternative models tried in order (JSON)"
    )
    llm_first_token_timeout: float = Field(
        30.0, gt=0, description="seconds from the request to the first chunk of text, reasoning or usage"
    )
    llm_stall_timeout: float = Field(
        15.0, gt=0, description="inter-chunk watchdog: seconds without a chunk before a stream is cut"
    )
    llm_connect_timeout: float = Field(10.0, gt=0, description="seconds to open a connection")
    llm_retries: int = Field(
        2,
        ge=0,
        description="retries of a call the provider refused (429, 5xx, no connection); never of one it accepted",
    )
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
        names = {
            OPENAI_KEY_ENV,
            ANTHROPIC_KEY_ENV,
            *(e.api_key_env for e in self.llm_endpoints.values() if e.api_key_env),
        }
        self._provider_keys = {name: SecretStr(os.environ[name]) for name in sorted(names) if name in os.environ}
        listed = {name for names in PROVIDER_KEY_ENVS.values() for name in names}
        self._key_envs_set = frozenset(name for name in listed | names if os.environ.get(name, "").strip())

    def provider_key(self, name: str | None) -> str | None:
        """The key held by the variable `name` when these settings were built (None: unset)."""
        key = self._provider_keys.get(name) if name else None
        return None if key is None else key.get_secret_value()

    def key_envs(self, model: str) -> tuple[str, ...]:
        """The variables one of which must hold a key for `model`, routed as the router does:
        none for `sim/...` and for an endpoint without `api_key_env`; the endpoint's variable;
        OPENAI_API_KEY for `openai/...`; PROVIDER_KEY_ENVS for the other prefixes (none when
        the prefix is not listed there)."""
        prefix, _, _ = model.partition("/")
        if prefix == SIMULATED_PREFIX:
            return ()
        endpoint = self.llm_endpoints.get(prefix)
        if endpoint is not None:
            return (endpoint.api_key_env,) if endpoint.api_key_env else ()
        return PROVIDER_KEY_ENVS.get(prefix, ())

    def missing_key_env(self, model: str) -> str | None:
        """The variable `model` needs that was unset or empty when these settings were built
        (the first of `key_envs(model)` when none of them is set); None when nothing is missing."""
        names = self.key_envs(model)
        if not names or any(name in self._key_envs_set for name in names):
            return None
        return names[0]

    def model_allowed(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.llm_allowed_models)
