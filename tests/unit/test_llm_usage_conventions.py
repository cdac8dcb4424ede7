"""Usage as each provider reports it, read into our normal form (services/common/llm/conventions.py).

Each case is a usage object literally as that provider (or a proxy in front of it) sends it. The
test asserts the normalised Usage and that its priced total (`cost_of`) equals the bill worked
out by hand from that provider's own rules and rates: what the provider charges.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.llm.conventions import normalise_usage
from services.common.pricing import ModelPrice, cost_of, rates_per_million
from services.common.usage import Usage

M = Decimal(1_000_000)

# Per-million rates as the providers publish them.
OPENAI = ModelPrice(
    "openai/gpt-4o",
    rates_per_million({"input_per_million": "2.50", "cached_input_per_million": "1.25", "output_per_million": "10"}),
    "test",
)
GEMINI = ModelPrice(
    "gemini/gemini-2.5-flash",
    rates_per_million({"input_per_million": "0.30", "cached_input_per_million": "0.03", "output_per_million": "2.50"}),
    "test",
)
# Anthropic: a cache read costs 0.1x the input rate, a (5-minute) cache write 1.25x.
ANTHROPIC = ModelPrice(
    "anthropic/claude-sonnet-4-5",
    rates_per_million(
        {
            "input_per_million": "3",
            "cached_input_per_million": "0.30",
            "cache_creation_input_per_million": "3.75",
            "output_per_million": "15",
        }
    ),
    "test",
)
DEEPSEEK = ModelPrice(
    "deepseek/deepseek-reasoner",
    rates_per_million({"input_per_million": "0.28", "cached_input_per_million": "0.028", "output_per_million": "0.42"}),
    "test",
)


def per_million(*terms: tuple[int, str]) -> Decimal:
    """A bill by hand: the sum of tokens x USD per million."""
    return sum((Decimal(tokens) * Decimal(rate) / M for tokens, rate in terms), Decimal(0))


def test_openai_usage_is_already_our_form():
    raw = {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0},
    }
    usage = normalise_usage(raw)
    assert usage == Usage(1200, 300, cached_prompt_tokens=1024, reasoning_tokens=128)
    # OpenAI bills cached input at its own rate, reasoning as output.
    assert cost_of(OPENAI, usage).total == per_million((1200 - 1024, "2.50"), (1024, "1.25"), (300, "10"))


def test_gemini_thoughts_outside_completion_tokens_the_issue_example(caplog):
    """completion_tokens 17 with reasoning_tokens 57: Gemini's thoughts are counted outside
    completion_tokens, and total_tokens says so. Gemini bills thoughts as output."""
    raw = {
        "prompt_tokens": 412,
        "completion_tokens": 17,
        "total_tokens": 412 + 17 + 57,
        "completion_tokens_details": {"reasoning_tokens": 57},
    }
    with caplog.at_level(logging.WARNING):
        usage = normalise_usage(raw, model="gemini/gemini-2.5-flash")
    assert usage == Usage(412, 74, reasoning_tokens=57)
    assert cost_of(GEMINI, usage).total == per_million((412, "0.30"), (17 + 57, "2.50"))
    assert not caplog.records  # settled by total_tokens: nothing to warn about


def test_reasoning_inside_completion_when_total_says_so():
    raw = {
        "prompt_tokens": 412,
        "completion_tokens": 74,
        "total_tokens": 486,
        "completion_tokens_details": {"reasoning_tokens": 57},
    }
    assert normalise_usage(raw) == Usage(412, 74, reasoning_tokens=57)


@pytest.mark.parametrize("total", [None, 412 + 17], ids=["no-total", "total-contradicts"])
def test_reasoning_larger_than_completion_unsettled_is_the_larger_reading_estimated(caplog, total):
    raw = {"prompt_tokens": 412, "completion_tokens": 17, "completion_tokens_details": {"reasoning_tokens": 57}}
    if total is not None:
        raw["total_tokens"] = total
    with caplog.at_level(logging.WARNING):
        usage = normalise_usage(raw, model="x/thinker")
    assert usage == Usage(412, 74, reasoning_tokens=57, estimated=True)
    assert any("x/thinker" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_anthropic_usage_counts_cache_outside_input_tokens():
    """Anthropic's own usage: input_tokens is the uncached rest; reads and writes come beside it."""
    raw = {
        "input_tokens": 50,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 10_000,
        "output_tokens": 400,
    }
    usage = normalise_usage(raw)
    assert usage == Usage(12_050, 400, cached_prompt_tokens=10_000, cache_creation_prompt_tokens=2000)
    # Anthropic's bill: input x 3, reads x 0.30 (0.1x), writes x 3.75 (1.25x), output x 15.
    assert cost_of(ANTHROPIC, usage).total == per_million((50, "3"), (10_000, "0.30"), (2000, "3.75"), (400, "15"))


def test_proxy_with_anthropic_cache_fields_outside_prompt_tokens():
    raw = {
        "prompt_tokens": 50,
        "completion_tokens": 400,
        "total_tokens": 50 + 2000 + 10_000 + 400,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 10_000,
    }
    usage = normalise_usage(raw)
    assert usage == Usage(12_050, 400, cached_prompt_tokens=10_000, cache_creation_prompt_tokens=2000)
    assert cost_of(ANTHROPIC, usage).total == per_million((50, "3"), (10_000, "0.30"), (2000, "3.75"), (400, "15"))


def test_litellm_usage_counts_cache_inside_prompt_tokens():
    """LiteLLM's Usage for Anthropic (model_dump of what its streaming handler builds): prompt_tokens
    already includes reads and writes, mirrored in the details and beside them."""
    raw = {
        "prompt_tokens": 12_050,
        "completion_tokens": 400,
        "total_tokens": 12_450,
        "prompt_tokens_details": {
            "cached_tokens": 10_000,
            "cache_creation_tokens": 2000,
            "cache_write_tokens": 2000,
            "text_tokens": 50,
        },
        "completion_tokens_details": {"reasoning_tokens": 0, "text_tokens": 400},
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 10_000,
    }
    usage = normalise_usage(raw)
    assert usage == Usage(12_050, 400, cached_prompt_tokens=10_000, cache_creation_prompt_tokens=2000)
    assert cost_of(ANTHROPIC, usage).total == per_million((50, "3"), (10_000, "0.30"), (2000, "3.75"), (400, "15"))


def test_anthropic_cache_fields_beside_prompt_tokens_without_total_are_the_larger_reading(caplog):
    raw = {"prompt_tokens": 12_050, "completion_tokens": 400, "cache_read_input_tokens": 10_000}
    with caplog.at_level(logging.WARNING):
        usage = normalise_usage(raw)
    assert usage == Usage(22_050, 400, cached_prompt_tokens=10_000, estimated=True)
    assert caplog.records


def test_deepseek_cache_hit_and_miss():
    raw = {
        "prompt_tokens": 900,
        "completion_tokens": 250,
        "total_tokens": 1150,
        "prompt_cache_hit_tokens": 640,
        "prompt_cache_miss_tokens": 260,
        "completion_tokens_details": {"reasoning_tokens": 180},
    }
    usage = normalise_usage(raw)
    assert usage == Usage(900, 250, cached_prompt_tokens=640, reasoning_tokens=180)
    assert cost_of(DEEPSEEK, usage).total == per_million((260, "0.28"), (640, "0.028"), (250, "0.42"))


def test_deepseek_prompt_from_hit_and_miss_when_prompt_tokens_is_missing():
    raw = {"completion_tokens": 10, "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36}
    assert normalise_usage(raw) == Usage(100, 10, cached_prompt_tokens=64)


def test_cached_tokens_larger_than_prompt_tokens_are_outside_it():
    raw = {
        "prompt_tokens": 30,
        "completion_tokens": 5,
        "total_tokens": 30 + 500 + 5,
        "prompt_tokens_details": {"cached_tokens": 500},
    }
    usage = normalise_usage(raw)
    assert usage == Usage(530, 5, cached_prompt_tokens=500)
    assert cost_of(OPENAI, usage).total == per_million((30, "2.50"), (500, "1.25"), (5, "10"))


def test_reasoning_and_cache_both_outside():
    raw = {
        "prompt_tokens": 30,
        "completion_tokens": 17,
        "total_tokens": 30 + 500 + 17 + 57,
        "prompt_tokens_details": {"cached_tokens": 500},
        "completion_tokens_details": {"reasoning_tokens": 57},
    }
    assert normalise_usage(raw) == Usage(530, 74, cached_prompt_tokens=500, reasoning_tokens=57)


def test_a_total_that_fits_no_reading_keeps_the_plain_one_estimated(caplog):
    raw = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 999}
    with caplog.at_level(logging.WARNING):
        assert normalise_usage(raw) == Usage(100, 20, estimated=True)
    assert "999" in caplog.text


def test_missing_counts_take_the_estimate_flagged(caplog):
    estimate = Usage(77, 33, estimated=True)
    with caplog.at_level(logging.WARNING):
        usage = normalise_usage({"completion_tokens": 12}, fallback=lambda: estimate)
    assert usage == Usage(77, 12, estimated=True)
    assert normalise_usage({"prompt_tokens": 40}, fallback=lambda: estimate) == Usage(40, 33, estimated=True)
    assert normalise_usage({"prompt_tokens": 40}) == Usage(40, 0, estimated=True)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ({"prompt_tokens": -5, "completion_tokens": 3}, Usage(77, 3, estimated=True)),
        ({"prompt_tokens": "12", "completion_tokens": 3.0, "total_tokens": 15}, Usage(12, 3)),
        ({"prompt_tokens": True, "completion_tokens": 3}, Usage(77, 3, estimated=True)),
        ({"prompt_tokens": 12, "completion_tokens": "many"}, Usage(12, 33, estimated=True)),
        ({"prompt_tokens": 12, "completion_tokens": 3, "prompt_tokens_details": 5}, Usage(12, 3, estimated=True)),
        (
            {"prompt_tokens": 12, "completion_tokens": 3, "completion_tokens_details": {"reasoning_tokens": -1}},
            Usage(12, 3, estimated=True),
        ),
        ({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 0}, Usage(12, 3)),
    ],
    ids=["negative", "numbers-as-text", "bool", "text", "details-not-object", "negative-part", "total-zero"],
)
def test_unreadable_counts_never_raise_and_are_flagged(raw, expected):
    assert normalise_usage(raw, fallback=lambda: Usage(77, 33, estimated=True)) == expected


_VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-10, max_value=10**7),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
_KEYS = st.sampled_from(
    [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "prompt_cache_hit_tokens",
        "prompt_cache_miss_tokens",
    ]
)
_DETAILS = st.one_of(
    _VALUES,
    st.dictionaries(
        st.sampled_from(["cached_tokens", "cache_write_tokens", "cache_creation_tokens", "reasoning_tokens"]),
        _VALUES,
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_KEYS, _VALUES),
    st.dictionaries(st.sampled_from(["prompt_tokens_details", "completion_tokens_details"]), _DETAILS),
)
def test_any_usage_mapping_gives_a_usage_in_our_form(counts, details):
    usage = normalise_usage({**counts, **details}, fallback=lambda: Usage(9, 4, estimated=True))
    assert min(usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens) >= 0
    assert usage.cached_prompt_tokens + usage.cache_creation_prompt_tokens <= usage.prompt_tokens
    assert 0 <= usage.reasoning_tokens <= usage.completion_tokens
    assert all(type(v) is int for v in (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens))
