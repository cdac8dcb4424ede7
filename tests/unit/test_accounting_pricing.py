"""Exact prices: the test plan's cost cases, LiteLLM's map read as JSON, the project file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from decimal import Decimal

import pytest

from services.common.money import AmountError, format_amount, parse_amount, to_decimal
from services.common.pricing import ModelNotPriced, PriceBook
from services.common.usage import Usage

M = Decimal(1_000_000)


@pytest.fixture(scope="module")
def prices() -> PriceBook:
    return PriceBook()


@pytest.mark.parametrize(
    "model,prompt,completion,expected",
    [
        ("claude-3-5-sonnet-20241022", 1_000_000, 1_000_000, "18"),
        ("claude-3-5-haiku-20241022", 500_000, 250_000, "1.40"),
        ("gpt-4", 100_000, 50_000, "6"),
        ("claude-3-opus-20240229", 1_000_000, 1_000_000, "90"),
        ("gpt-3.5-turbo", 1_000_000, 1_000_000, "2"),
        ("sim/debater", 1_000_000, 1_000_000, "0"),
        ("sim/judge", 5, 5, "0"),
        ("sim/anything-new", 5, 5, "0"),
    ],
)
def test_test_plan_costs_are_exact(prices, model, prompt, completion, expected):
    cost = prices.cost(model, Usage(prompt, completion))
    assert cost.total == Decimal(expected)
    assert cost.total == cost.input + cost.output
    assert format_amount(cost.total) == format_amount(Decimal(expected))


@pytest.mark.parametrize("prompt,completion", [(100, 50), (1000, 500), (10_000, 5000), (100_000, 50_000)])
def test_cost_is_linear_from_100_to_100k(prices, prompt, completion):
    cost = prices.cost("claude-3-5-sonnet-20241022", Usage(prompt, completion)).total
    assert cost == prompt * Decimal(3) / M + completion * Decimal(15) / M
    assert cost * 1000 == prices.cost("claude-3-5-sonnet-20241022", Usage(prompt * 1000, completion * 1000)).total
    base = prices.cost("claude-3-5-sonnet-20241022", Usage(100, 50)).total
    assert cost == base * (prompt // 100)


def test_provider_prefix_is_optional(prices):
    usage = Usage(1234, 567)
    for bare in ("claude-3-5-sonnet-20241022", "claude-3-opus-20240229", "gpt-4", "gpt-4o"):
        prefix = "openai/" if bare.startswith("gpt") else "anthropic/"
        assert prices.cost(prefix + bare, usage).total == prices.cost(bare, usage).total
    assert prices.price("deepseek/deepseek-chat").source.startswith("litellm-")


def test_project_file_wins_and_says_so(prices):
    assert prices.price("gpt-4").source == f"project-prices-{prices.project_version}"
    assert prices.price("gpt-4o").source.startswith("litellm-")
    assert prices.price("claude-3-5-sonnet-20241022").rates.input == Decimal("0.000003")


def test_litellm_floats_become_their_decimal_repr(prices):
    rates = prices.price("gpt-4o").rates
    assert (rates.input, rates.output, rates.cached_input) == (
        Decimal("0.0000025"),
        Decimal("0.00001"),
        Decimal("0.00000125"),
    )
    assert to_decimal(1.1e-06) == Decimal("0.0000011")  # not the binary 1.0999999999999999e-06...
    assert to_decimal(0.1) + to_decimal(0.2) == Decimal("0.3")


def test_unknown_model_is_an_error_naming_it_never_zero(prices):
    for model in ("gpt-99-imaginary", "anthropic/claude-none", "sim"):
        with pytest.raises(ModelNotPriced) as missing:
            prices.cost(model, Usage(1, 1))
        assert missing.value.reason == "MODEL_NOT_PRICED"
        assert model in missing.value.message and missing.value.metadata == {"model": model}


def test_cached_and_reasoning_tokens(prices, tmp_path):
    cost = prices.cost("gpt-4o", Usage(prompt_tokens=2000, completion_tokens=100, cached_prompt_tokens=1500))
    assert cost.input == 500 * Decimal("0.0000025")
    assert cost.cached_input == 1500 * Decimal("0.00000125")
    # Claude's cache price comes from the project file (a tenth of the input price).
    claude = prices.cost("claude-3-5-sonnet-20241022", Usage(1_000_000, 0, cached_prompt_tokens=1_000_000))
    assert claude.total == Decimal("0.3")
    # No cache price: cached tokens cost the input price.
    gpt4 = prices.cost("gpt-4", Usage(1000, 0, cached_prompt_tokens=400))
    assert gpt4.total == Decimal("0.03")

    book = _book(
        tmp_path,
        {
            "r-model": {
                "input_cost_per_token": 1e-06,
                "output_cost_per_token": 4e-06,
                "output_cost_per_reasoning_token": 2e-06,
            }
        },
    )
    r = book.cost("r-model", Usage(10, 100, reasoning_tokens=60))
    assert (r.output, r.reasoning, r.total) == (Decimal("0.00016"), Decimal("0.00012"), Decimal("0.00029"))


def test_tiered_prices_follow_the_prompt_size(tmp_path):
    book = _book(
        tmp_path,
        {
            "tiered": {
                "input_cost_per_token": 1e-06,
                "output_cost_per_token": 2e-06,
                "input_cost_per_token_above_200k_tokens": 3e-06,
                "output_cost_per_token_above_200k_tokens": 4e-06,
            }
        },
    )
    assert book.cost("tiered", Usage(200_000, 10)).total == Decimal("0.20002")
    assert book.cost("tiered", Usage(200_001, 10)).total == Decimal("0.600043")


def test_money_parsing():
    assert parse_amount("1.40") == Decimal("1.40")
    assert parse_amount("") == 0
    for bad in ("abc", "NaN", "Infinity", "1,5"):
        with pytest.raises(AmountError):
            parse_amount(bad)
    assert format_amount(Decimal("18.000000")) == "18"
    assert format_amount(Decimal("1E-7")) == "0.0000001"
    assert format_amount(Decimal(120)) == "120"


def test_pricing_never_imports_litellm():
    script = textwrap.dedent(
        """
        import sys
        from services.accounting.server import build_service
        from services.common.pricing import PriceBook
        assert len(PriceBook()) > 1000
        assert "litellm" not in sys.modules, "litellm was imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def _book(tmp_path, entries: dict) -> PriceBook:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(entries))
    return PriceBook(litellm_file=path)
