"""Exact prices: LiteLLM's bundled price map plus the project's price file.

LiteLLM's `model_prices_and_context_window_backup.json` is read as plain JSON from the
installed package (found with `importlib.util.find_spec`, never imported). Its float
per-token prices become Decimals through their shortest repr (3e-06 -> 0.000003), so no
binary float ever enters a sum. `prices.toml` (versioned) holds models the map lacks or
prices differently, and the simulated models; it wins over the map. Prices declared for an
endpoint (`declared=`, from LLM_ENDPOINTS) win over both for the models under that prefix, with
the source "declared-<endpoint>".

Everything is loaded once into a dict of `ModelPrice`; a lookup is a dict hit.

Cost of a usage (`services.common.usage.Usage`, token fields as in `debate.common.v1.TokenUsage`):
  (prompt - cached - cache_creation) x input + cached x cached_input (input when the model has
  no cache price) + cache_creation x cache_creation_input (input when none)
  + (completion - reasoning) x output + reasoning x reasoning (output when none).
When a model has tiered prices ("input_cost_per_token_above_200k_tokens"), the highest tier
whose threshold the prompt passes prices the whole call, as LiteLLM does.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.common.errors import NotFound
from services.common.money import (
    EXACT,
    MILLION,
    ZERO,
    exact_sum,
    format_amount,
    mul,
    to_decimal,
)
from services.common.usage import Usage

PROJECT_PRICES = Path(__file__).with_name("prices.toml")
LITELLM_PRICE_FILE = "model_prices_and_context_window_backup.json"
_MAX_ALIASES = 10_000
_TIER_KEY = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-token prices, USD."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    reasoning: Decimal | None = None
    # Prompt tokens written to the provider's cache (Anthropic's cache_creation_input_tokens).
    cache_creation_input: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ModelPrice:
    model: str
    rates: Rates
    source: str
    # (prompt-token threshold, rates above it), ascending.
    tiers: tuple[tuple[int, Rates], ...] = ()

    def rates_for(self, prompt_tokens: int) -> Rates:
        chosen = self.rates
        for threshold, rates in self.tiers:
            if prompt_tokens > threshold:
                chosen = rates
        return chosen


@dataclass(frozen=True, slots=True)
class Cost:
    input: Decimal
    cached_input: Decimal
    output: Decimal
    reasoning: Decimal
    total: Decimal
    price: ModelPrice = field(compare=False)
    cache_creation_input: Decimal = ZERO


class ModelNotPriced(NotFound):
    reason = "MODEL_NOT_PRICED"

    def __init__(self, model: str):
        super().__init__(
            f"no price is known for model {model!r}; add it to services/common/prices.toml",
            metadata={"model": model},
        )
        self.model = model


def _per_million(value: str) -> Decimal:
    return EXACT.divide(Decimal(value), MILLION)


def _litellm_dir() -> Path:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the litellm package is not installed; its price map is needed")
    return Path(next(iter(spec.submodule_search_locations)))


def _litellm_price(name: str, entry: dict[str, Any], source: str) -> ModelPrice | None:
    def num(key: str) -> Decimal | None:
        value = entry.get(key)
        return to_decimal(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    inp, out = num("input_cost_per_token"), num("output_cost_per_token")
    if inp is None and out is None:
        return None
    base = Rates(
        inp or ZERO,
        out or ZERO,
        num("cache_read_input_token_cost"),
        num("output_cost_per_reasoning_token"),
        num("cache_creation_input_token_cost"),
    )
    tiers = []
    for key in entry:
        match = _TIER_KEY.match(key)
        if not match:
            continue
        k = match.group(1) + "k_tokens"
        tier_in = num(f"input_cost_per_token_above_{k}")
        tier_out = num(f"output_cost_per_token_above_{k}")
        tier_cached = num(f"cache_read_input_token_cost_above_{k}")
        tiers.append(
            (
                int(match.group(1)) * 1000,
                Rates(
                    tier_in if tier_in is not None else base.input,
                    tier_out if tier_out is not None else base.output,
                    tier_cached if tier_cached is not None else base.cached_input,
                    base.reasoning,
                    base.cache_creation_input,
                ),
            )
        )
    return ModelPrice(name, base, source, tuple(sorted(tiers, key=lambda t: t[0])))


def rates_per_million(entry: Mapping[str, Any]) -> Rates:
    """Rates from USD-per-million decimal strings: `input_per_million` and `output_per_million`,
    and optionally `cached_input_per_million`, `reasoning_per_million` and
    `cache_creation_input_per_million` (the form of prices.toml and of an endpoint's declared
    price). Raises KeyError or decimal.InvalidOperation on a malformed entry."""

    def opt(key: str) -> Decimal | None:
        return _per_million(entry[key]) if entry.get(key) not in (None, "") else None

    return Rates(
        _per_million(entry["input_per_million"]),
        _per_million(entry["output_per_million"]),
        opt("cached_input_per_million"),
        opt("reasoning_per_million"),
        opt("cache_creation_input_per_million"),
    )


def declared_source(endpoint: str) -> str:
    """The price source of a price declared for an endpoint in LLM_ENDPOINTS."""
    return f"declared-{endpoint}"


class PriceBook:
    """Every known model's price, loaded once; `price(model)` is a dict hit."""

    def __init__(
        self,
        litellm_file: Path | None = None,
        project_file: Path = PROJECT_PRICES,
        declared: Mapping[str, Rates] | None = None,
    ):
        """`declared`: rates by endpoint name, for the models named `<endpoint>/...` (they win)."""
        project = tomllib.loads(project_file.read_text())
        self.project_version = str(project["version"])
        project_source = f"project-prices-{self.project_version}"
        litellm_file = litellm_file or _litellm_dir() / LITELLM_PRICE_FILE
        try:
            litellm_version = importlib.metadata.version("litellm")
        except importlib.metadata.PackageNotFoundError:
            litellm_version = "unknown"
        self.litellm_source = f"litellm-{litellm_version}"
        self._prices: dict[str, ModelPrice] = {}
        with open(litellm_file, "rb") as f:
            raw = json.load(f)
        for name, entry in raw.items():
            if name == "sample_spec" or not isinstance(entry, dict):
                continue
            price = _litellm_price(name, entry, self.litellm_source)
            if price is not None:
                self._prices[name] = price
        del raw
        for name, entry in project.get("models", {}).items():
            self._prices[name] = ModelPrice(name, rates_per_million(entry), project_source)
        self._aliases: set[str] = set()
        self._declared = tuple(
            (f"{endpoint}/", ModelPrice(f"{endpoint}/*", rates, declared_source(endpoint)))
            for endpoint, rates in (declared or {}).items()
        )
        self._prefixes = tuple(
            (prefix, ModelPrice(prefix + "*", rates_per_million(entry), project_source))
            for prefix, entry in project.get("prefixes", {}).items()
        )

    def __len__(self) -> int:
        return len(self._prices)

    def find(self, model: str) -> ModelPrice | None:
        """The price of a model as LiteLLM names it: the full name first ("deepseek/deepseek-chat"),
        then without its provider prefix ("anthropic/claude-3-opus-20240229" -> "claude-3-opus-20240229")."""
        for prefix, declared in self._declared:
            if model.startswith(prefix):
                return ModelPrice(model, declared.rates, declared.source)
        price = self._prices.get(model)
        if price is not None:
            return price
        for prefix, prefix_price in self._prefixes:
            if model.startswith(prefix):
                price = ModelPrice(model, prefix_price.rates, prefix_price.source)
                break
        else:
            if "/" not in model:
                return None
            price = self._prices.get(model.split("/", 1)[1])
            if price is None:
                return None
        if len(self._aliases) < _MAX_ALIASES:  # remembered under the asked name: next time one hit
            self._aliases.add(model)
            self._prices[model] = price
        return price

    def price(self, model: str) -> ModelPrice:
        price = self.find(model)
        if price is None:
            raise ModelNotPriced(model)
        return price

    def cost(self, model: str, usage: Usage) -> Cost:
        """Exact cost of a usage; the caller has validated the token counts."""
        price = self.price(model)
        return cost_of(price, usage)


def cost_of(price: ModelPrice, usage: Usage) -> Cost:
    rates = price.rates_for(usage.prompt_tokens)
    cached_rate = rates.input if rates.cached_input is None else rates.cached_input
    write_rate = rates.input if rates.cache_creation_input is None else rates.cache_creation_input
    reasoning_rate = rates.output if rates.reasoning is None else rates.reasoning
    uncached = usage.prompt_tokens - usage.cached_prompt_tokens - usage.cache_creation_prompt_tokens
    input_cost = mul(uncached, rates.input)
    cached_cost = mul(usage.cached_prompt_tokens, cached_rate)
    write_cost = mul(usage.cache_creation_prompt_tokens, write_rate)
    output_cost = mul(usage.completion_tokens - usage.reasoning_tokens, rates.output)
    reasoning_cost = mul(usage.reasoning_tokens, reasoning_rate)
    total = exact_sum((input_cost, cached_cost, write_cost, output_cost, reasoning_cost))
    return Cost(input_cost, cached_cost, output_cost, reasoning_cost, total, price, write_cost)


def per_million(rate: Decimal | None) -> str:
    """A per-token rate as the wire's USD-per-million decimal string; empty when unset."""
    return "" if rate is None else format_amount(mul(rate, MILLION))
