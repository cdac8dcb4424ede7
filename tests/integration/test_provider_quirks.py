"""Provider behaviours people report against systems like ours, through the real-provider path and
the fake OpenAI-compatible server: `fake/...` through the lean SSE reader, `lite/...` through
LiteLLM, `anthropic/...` through LiteLLM's Anthropic provider against the fake's Messages API.

1. Usage in another convention than ours (reasoning or cache outside its whole): read so that
   the priced total equals what the provider billed (`server.billed`).
2. Streams whose first bytes are reasoning, not answer text: the first-token wait ends at the
   first chunk that carries anything, the reasoning is a ReasoningDelta (never answer text), and
   a call cut after the provider answered is billed and raised to the caller, never retried
   inside the router.
3. Chunks of unexpected shapes: content as typed blocks is read; any other shape is a billed
   PROVIDER_BAD_CHUNK with what streamed before it, never a TypeError.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from types import SimpleNamespace

import pytest

from services.common.llm import (
    ChatMessage,
    CompletionRequest,
    ProviderError,
    ProviderTimeout,
    ReasoningDelta,
    StreamStalled,
    TextDelta,
    build_llm_client,
    collect,
)
from services.common.llm.conventions import normalise_usage
from services.common.llm.guard import ProviderBadChunk
from services.common.llm.litellm_provider import _reported_usage, load_litellm
from services.common.pricing import ModelPrice, PriceBook, cost_of, rates_per_million
from services.common.tokens import count_message_tokens, count_text_tokens
from services.common.usage import Usage
from tests.support.fake_openai import BAD_CHUNKS, DEFAULT_REASONING, Behavior, content_chunks
from tests.support.fixtures import (  # noqa: F401 - fixtures
    FAKE_KEY_ENV,
    delivery,
    fake_openai,
    fake_openai_server,
    parametrize_delivery,
    settings_for,
)


def pytest_generate_tests(metafunc):
    parametrize_delivery(metafunc)  # the tests that read a whole stream run pulled and pushed


TRANSPORTS = ["fake", "lite"]  # lean reader, LiteLLM
MESSAGES = (ChatMessage("system", "Topic: cities without cars\nStance: for"), ChatMessage("user", "Your turn."))
M = Decimal(1_000_000)
# A price with every rate distinct, so a token counted under the wrong heading changes the total.
PRICE = ModelPrice(
    "fake/*",
    rates_per_million(
        {
            "input_per_million": "3",
            "cached_input_per_million": "0.30",
            "cache_creation_input_per_million": "3.75",
            "output_per_million": "15",
            "reasoning_per_million": "12",
        }
    ),
    "test",
)


@pytest.fixture
def fake(fake_openai):  # noqa: F811 - the imported fixture
    return fake_openai


@pytest.fixture
def settings(fake, monkeypatch):
    monkeypatch.setenv(FAKE_KEY_ENV, "sk-quirks")
    return settings_for(fake, llm_first_token_timeout=5.0, llm_stall_timeout=1.0, llm_retries=2, llm_backoff_base=0.01)


@pytest.fixture
async def llm(settings):
    client = build_llm_client(settings)
    yield client
    await client.aclose()


def request(model: str, **kwargs) -> CompletionRequest:
    return CompletionRequest(model=model, messages=MESSAGES, **kwargs)


async def events_of(llm, model: str, **kwargs) -> list:
    return [event async for event in llm.stream(request(model, **kwargs))]


def thoughts(count: int) -> list[str]:
    return content_chunks(DEFAULT_REASONING, count)


# ---------------------------------------------------------------------------------------- kind 1


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "behavior",
    [
        Behavior(chunks=17, reasoning_tokens=57, usage_convention="reasoning_outside"),
        Behavior(chunks=17, reasoning_tokens=57),
        Behavior(chunks=12, reasoning_chunks=6, cached_tokens=8, cache_creation_tokens=5),
        Behavior(chunks=12, cached_tokens=8, cache_creation_tokens=5, usage_convention="anthropic_cache"),
        Behavior(chunks=12, reasoning_tokens=9, cached_tokens=8, usage_convention="deepseek"),
        Behavior(chunks=17, reasoning_tokens=57, cached_tokens=8, usage_convention="reasoning_outside"),
    ],
    ids=["gemini-thoughts-outside", "openai", "openai-cache-writes", "anthropic-cache-outside", "deepseek", "both"],
)
async def test_usage_in_any_convention_is_priced_as_the_provider_billed(llm, fake, transport, behavior):
    """The issue's example first: completion_tokens 17, reasoning_tokens 57 counted outside it."""
    fake.script(behavior)
    result = await collect(llm, request(f"{transport}/gpt-test"))
    billed = fake.billed[-1]
    assert billed.outcome == "complete" and billed.usage_sent
    assert result.completion.usage == billed.usage()  # every count under its heading, not estimated
    assert cost_of(PRICE, result.completion.usage).total == cost_of(PRICE, billed.usage()).total
    assert len(fake.requests) == 1


async def test_the_issue_example_reads_74_completion_tokens_57_of_them_reasoning(llm, fake):
    fake.script(Behavior(chunks=17, reasoning_tokens=57, usage_convention="reasoning_outside"))
    usage = (await collect(llm, request("fake/gpt-test"))).completion.usage
    assert (usage.completion_tokens, usage.reasoning_tokens, usage.estimated) == (74, 57, False)
    # By hand: prompt x 3, 17 answer tokens x 15, 57 reasoning tokens x 12 (per million).
    expected = (Decimal(usage.prompt_tokens) * 3 + 17 * 15 + 57 * 12) / M
    assert cost_of(PRICE, usage).total == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reasoning_outside_with_no_total_is_the_larger_reading_estimated(llm, fake, transport):
    fake.script(Behavior(chunks=17, reasoning_tokens=57, usage_convention="reasoning_outside", total_tokens=False))
    usage = (await collect(llm, request(f"{transport}/gpt-test"))).completion.usage
    billed = fake.billed[-1].usage()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens) == (
        billed.prompt_tokens,
        billed.completion_tokens,
        57,
    )
    assert usage.estimated  # nothing confirmed the reading: flagged, never refused


@pytest.fixture(params=["lean", "litellm"])
def anthropic_llm(request, fake, monkeypatch):
    """Settings for `anthropic/claude-sonnet-4-5` sent to the fake's Messages API: on the lean
    path (anthropic_native.py), or through LiteLLM's own Anthropic provider."""
    monkeypatch.setenv("ANTHROPIC_API_BASE", fake.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-quirks")
    monkeypatch.setenv(FAKE_KEY_ENV, "sk-quirks")
    return settings_for(
        fake,
        llm_allowed_models=["anthropic/claude-sonnet-4-5"],
        llm_anthropic_lean=request.param == "lean",
        llm_anthropic_api_base=fake.anthropic_base_url,
        llm_first_token_timeout=5.0,
        llm_stall_timeout=1.0,
        llm_retries=2,
        llm_backoff_base=0.01,
    )


async def test_anthropic_stream_prices_cache_reads_and_writes_as_anthropic_bills(fake, anthropic_llm):
    """Anthropic counts cache reads and writes outside input_tokens and bills them at 0.1x and
    1.25x the input rate; thinking is billed as output. Through the lean path's Messages stream
    and through the installed LiteLLM's own, the ledger's usage priced with the project's price
    book equals that bill."""
    fake.script(Behavior(chunks=9, reasoning_chunks=5, cached_tokens=10, cache_creation_tokens=4))
    llm = build_llm_client(anthropic_llm)
    try:
        result = await collect(llm, request("anthropic/claude-sonnet-4-5"))
    finally:
        await llm.aclose()
    billed = fake.billed[-1]
    assert fake.requests[-1].path.endswith("/v1/messages") and billed.outcome == "complete"
    assert fake.requests[-1].headers.get("x-api-key") == "sk-ant-quirks"
    assert result.text == "".join(content_chunks(fake.text, 9))
    assert result.reasoning == "".join(thoughts(5))  # thinking: reasoning, never the answer
    usage = result.completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (
        billed.prompt_tokens,
        billed.completion_tokens,
        False,
    )
    assert (usage.cached_prompt_tokens, usage.cache_creation_prompt_tokens) == (10, 4)
    assert 0 <= usage.reasoning_tokens <= usage.completion_tokens
    uncached = billed.prompt_tokens - 10 - 4
    expected = (Decimal(uncached) * 3 + Decimal(10) * Decimal("0.30") + Decimal(4) * Decimal("3.75")) / M + Decimal(
        billed.completion_tokens
    ) * 15 / M
    assert PriceBook().cost("anthropic/claude-sonnet-4-5", usage).total == expected


async def test_anthropic_lean_request_and_length_stop(fake, anthropic_llm):
    """The Messages request as Anthropic takes it (system apart, max_tokens, the version header),
    and a stop at max_tokens read as "length"."""
    if not anthropic_llm.llm_anthropic_lean:
        pytest.skip("the lean path's request")
    fake.script(Behavior(chunks=9))
    llm = build_llm_client(anthropic_llm)
    try:
        result = await collect(llm, request("anthropic/claude-sonnet-4-5", max_tokens=4, temperature=0.5))
    finally:
        await llm.aclose()
    sent = fake.requests[-1]
    assert sent.headers.get("anthropic-version") == "2023-06-01"
    assert sent.body["system"] == MESSAGES[0].content and sent.body["model"] == "claude-sonnet-4-5"
    assert sent.body["messages"] == [{"role": "user", "content": "Your turn."}]
    assert (sent.body["max_tokens"], sent.body["temperature"], sent.body["stream"]) == (4, 0.5, True)
    assert result.text == "".join(content_chunks(fake.text, 9)[:4]) and result.completion.finish_reason == "length"


@pytest.mark.parametrize(
    "behavior, error",
    [
        (Behavior(status=529), ProviderError),
        (Behavior(chunks=20, stall_after=3), StreamStalled),
        (Behavior(chunks=20, close_after=3), ProviderError),
    ],
    ids=["overloaded", "stall", "dropped"],
)
async def test_anthropic_lean_faults_are_typed_and_billed_as_on_the_openai_path(fake, anthropic_llm, behavior, error):
    if not anthropic_llm.llm_anthropic_lean:
        pytest.skip("the lean path's faults")
    settings = anthropic_llm.model_copy(update={"llm_retries": 0})
    fake.script(behavior)
    llm = build_llm_client(settings)
    try:
        with pytest.raises(error) as caught:
            await collect(llm, request("anthropic/claude-sonnet-4-5"))
    finally:
        await llm.aclose()
    if behavior.status != 200:
        assert not caught.value.billed and caught.value.retryable
    else:
        sent = "".join(content_chunks(fake.text, 20)[:3])
        assert caught.value.billed and caught.value.partial_text == sent and not caught.value.retryable
    assert "sk-ant-quirks" not in str(caught.value)


def test_litellm_gemini_usage_with_thoughts_and_cache_is_priced_as_google_bills():
    """What the installed LiteLLM's Gemini stream parser puts on a chunk (VertexGeminiConfig.
    calculate_usage of a usageMetadata), read as our provider reads the last chunk's usage:
    candidatesTokenCount excludes thoughts; promptTokenCount includes the cached content."""
    litellm = load_litellm()
    metadata = {
        "promptTokenCount": 5000,
        "cachedContentTokenCount": 4000,
        "candidatesTokenCount": 17,
        "thoughtsTokenCount": 57,
        "totalTokenCount": 5000 + 17 + 57,
    }
    chunk_usage = litellm.VertexGeminiConfig.calculate_usage({"usageMetadata": metadata})
    raw = _reported_usage(SimpleNamespace(chunks=[SimpleNamespace(usage=None), SimpleNamespace(usage=chunk_usage)]))
    assert raw is not None
    usage = normalise_usage(raw, model="gemini/gemini-2.5-flash")
    assert usage == Usage(5000, 74, cached_prompt_tokens=4000, reasoning_tokens=57)
    # Google: uncached input x 0.30, cached x 0.03, output (thoughts included) x 2.50 per million.
    expected = (Decimal(1000) * Decimal("0.30") + Decimal(4000) * Decimal("0.03") + Decimal(74) * Decimal("2.50")) / M
    assert PriceBook().cost("gemini/gemini-2.5-flash", usage).total == expected


# ---------------------------------------------------------------------------------------- kind 2


async def _reasoning_then_answer(fake, llm, model: str, *, thinking: int, delay: float, field: str) -> None:
    fake.script(Behavior(chunks=8, reasoning_chunks=thinking, reasoning_delay=delay, reasoning_field=field))
    events = await events_of(llm, model)
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    reasoning = [e.text for e in events if isinstance(e, ReasoningDelta)]
    assert texts == content_chunks(fake.text, 8)  # the reasoning never in the answer
    assert reasoning == thoughts(thinking)
    assert all(type(t) is str for t in texts + reasoning)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_longer_than_the_first_token_timeout_completes(fake, settings, transport, field):
    """Reasoning deltas for twice the first-token timeout before any content: one call, complete."""
    settings = settings.model_copy(update={"llm_first_token_timeout": 0.75, "llm_stall_timeout": 0.5})
    llm = build_llm_client(settings)
    try:
        await _reasoning_then_answer(fake, llm, f"{transport}/gpt-test", thinking=30, delay=0.05, field=field)
    finally:
        await llm.aclose()
    assert len(fake.requests) == 1 and [b.outcome for b in fake.billed] == ["complete"]


async def test_the_issue_example_six_seconds_of_reasoning_with_a_three_second_first_token_timeout(fake, settings):
    """reasoning_content every 0.2 s for 6 s before any content, LLM_FIRST_TOKEN_TIMEOUT=3: both
    paths (at once) complete, one billed call each, usage equal to the bill."""
    settings = settings.model_copy(update={"llm_first_token_timeout": 3.0, "llm_stall_timeout": 1.0})
    llm = build_llm_client(settings)
    behavior = Behavior(chunks=8, reasoning_chunks=30, reasoning_delay=0.2)
    fake.script(behavior, behavior)
    try:
        results = await asyncio.gather(*(collect(llm, request(f"{t}/gpt-test")) for t in TRANSPORTS))
    finally:
        await llm.aclose()
    assert len(fake.requests) == 2 and [b.outcome for b in fake.billed] == ["complete", "complete"]
    for result in results:
        assert result.text == "".join(content_chunks(fake.text, 8))
        assert result.reasoning == "".join(thoughts(30))
        assert result.completion.usage == fake.billed[0].usage() == fake.billed[1].usage()
        assert result.completion.usage.reasoning_tokens == 30 and not result.completion.usage.estimated


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stall_during_reasoning_is_billed_raised_once_and_counted_as_the_provider_did(fake, settings, transport):
    """The stall watchdog, armed by the reasoning, cuts the call; the router does not retry it
    (billed); what streamed, counted with our tokenizer as a caller estimates a cut call, is
    what the provider billed (the fake counts with our tokenizer here)."""
    fake.tokenizer, fake.count_model_prefix = True, f"{transport}/"
    settings = settings.model_copy(update={"llm_stall_timeout": 0.4, "llm_retries": 2})
    llm = build_llm_client(settings)
    fake.script(Behavior(chunks=20, reasoning_chunks=6, stall_after=0))
    try:
        with pytest.raises(StreamStalled) as caught:
            await collect(llm, request(f"{transport}/gpt-test"))
    finally:
        await llm.aclose()
    error = caught.value
    assert error.billed and error.partial_text == "" and error.partial_reasoning == "".join(thoughts(6))
    assert error.retryable  # by the caller, as a new attempt: no speech went out
    assert len(fake.requests) == 1
    model = f"{transport}/gpt-test"
    reasoning_tokens = count_text_tokens(model, error.partial_reasoning)
    estimate = Usage(
        prompt_tokens=count_message_tokens(model, [m.as_dict() for m in MESSAGES]),
        completion_tokens=reasoning_tokens,
        reasoning_tokens=reasoning_tokens,
    )
    assert [b.outcome for b in fake.billed] == ["stalled"] and fake.billed[0].usage() == estimate


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reasoning_that_never_reaches_an_answer_within_the_first_token_timeout(fake, settings, transport):
    """The provider answered 200, then its first reasoning chunk comes after the first-token
    timeout: a billed ProviderTimeout raised to the caller (retryable by it), not retried here."""
    settings = settings.model_copy(update={"llm_first_token_timeout": 0.3, "llm_retries": 2})
    llm = build_llm_client(settings)
    fake.script(*[Behavior(reasoning_chunks=3, reasoning_delay=30)] * 3)
    try:
        with pytest.raises(ProviderTimeout) as caught:
            await collect(llm, request(f"{transport}/gpt-test"))
    finally:
        await llm.aclose()
    assert caught.value.billed and caught.value.retryable and len(fake.requests) == 1


@pytest.mark.parametrize("shape", ["not_json", "content_number"])
async def test_a_billed_failure_before_any_text_is_not_retried_nor_fallen_back_from(fake, settings, shape):
    settings = settings.model_copy(update={"llm_fallbacks": {"fake/primary": ["fake/backup"]}})
    llm = build_llm_client(settings)
    fake.script(Behavior(chunks=5, bad_chunk=shape, bad_chunk_after=0), Behavior(chunks=5), Behavior(chunks=5))
    try:
        with pytest.raises(ProviderBadChunk) as caught:
            await collect(llm, request("fake/primary"))
    finally:
        await llm.aclose()
    assert caught.value.billed and caught.value.partial_text == ""
    assert [r.body["model"] for r in fake.requests] == ["primary"]


# ---------------------------------------------------------------------------------------- kind 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_content_as_typed_blocks_is_read(llm, fake, transport):
    """The issue's example: delta.content = [{"type": "text", "text": " word"}]; reasoning sent as
    thinking blocks in the content is reasoning."""
    fake.script(Behavior(chunks=12, content_blocks=True, reasoning_chunks=4))
    events = await events_of(llm, f"{transport}/gpt-test")
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts == content_chunks(fake.text, 12) and all(type(t) is str for t in texts)
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == thoughts(4)
    assert events[-1].usage == fake.billed[-1].usage()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("shape", sorted(BAD_CHUNKS))
async def test_unexpected_chunk_shape_is_a_billed_typed_error_with_partial_text(llm, fake, transport, shape):
    fake.script(Behavior(chunks=10, bad_chunk=shape, bad_chunk_after=3))
    texts: list = []
    with pytest.raises(ProviderBadChunk) as caught:
        async for event in llm.stream(request(f"{transport}/gpt-test")):
            if isinstance(event, TextDelta):
                texts.append(event.text)
    error = caught.value
    sent = content_chunks(fake.text, 10)[:3]
    assert texts == sent and all(type(t) is str for t in texts)
    assert error.reason == "PROVIDER_BAD_CHUNK" and error.code == "UNAVAILABLE"
    assert error.billed and error.partial_text == "".join(sent)
    assert len(fake.requests) == 1 and [b.outcome for b in fake.billed] == ["bad_chunk"]
