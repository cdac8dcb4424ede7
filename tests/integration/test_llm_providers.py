"""The real-provider path against a local OpenAI-compatible server: the lean reader and LiteLLM.

`fake/...` models go through the lean httpx SSE reader, `lite/...` models through LiteLLM,
both to the same FakeOpenAIServer.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.common.llm import (
    ChatMessage,
    CompletionRequest,
    LLMError,
    ModelNotAllowed,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    StreamStalled,
    TextDelta,
    build_llm_client,
    collect,
    stream_to,
)
from services.common.llm.base import collect as read_whole  # not swapped by `delivery`
from services.common.llm.guard import ProviderBadChunk
from services.common.tokens import count_message_tokens, count_text_tokens
from tests.support.fake_openai import Behavior, content_chunks, prompt_tokens_of
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


CANARY = "sk-canary-7f3a9c1e5b2d4f608a1b"
TRANSPORTS = ["fake", "lite"]  # lean reader, LiteLLM
MESSAGES = (ChatMessage("system", "Topic: testing\nStance: for"), ChatMessage("user", "Your turn."))


@pytest.fixture
def fake(fake_openai):  # noqa: F811 - the imported fixture
    return fake_openai


@pytest.fixture
def settings(fake, monkeypatch):
    monkeypatch.setenv(FAKE_KEY_ENV, CANARY)
    return settings_for(fake, llm_first_token_timeout=5.0, llm_stall_timeout=0.5, llm_retries=2, llm_backoff_base=0.01)


@pytest.fixture
async def llm(settings):
    client = build_llm_client(settings)
    client.delays = []

    async def record(delay: float) -> None:
        client.delays.append(delay)

    client._sleep = record
    yield client
    await client.aclose()


def request(model: str, **kwargs) -> CompletionRequest:
    return CompletionRequest(model=model, messages=MESSAGES, **kwargs)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stream_relays_text_and_usage_as_sent(llm, fake, transport):
    fake.script(Behavior(chunks=40))
    result = await collect(llm, request(f"{transport}/gpt-test"))
    sent = content_chunks(fake.text, 40)
    assert result.text == "".join(sent)
    assert result.deltas == sent
    usage = result.completion.usage
    billed = fake.billed[-1]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (
        billed.prompt_tokens,
        billed.completion_tokens,
        False,
    )
    assert billed.completion_tokens == 40 and billed.prompt_tokens == prompt_tokens_of(fake.requests[-1].body)
    assert result.completion.model == f"{transport}/gpt-test" and not result.completion.simulated
    body = fake.requests[-1].body
    assert body["model"] == "gpt-test" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert fake.requests[-1].headers["authorization"] == f"Bearer {CANARY}"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_429_then_success_retries_honouring_retry_after(llm, fake, transport):
    fake.script(Behavior(status=429, retry_after=0.25), Behavior())
    result = await collect(llm, request(f"{transport}/gpt-test"))
    assert result.text == fake.text.strip() or result.text == "".join(content_chunks(fake.text, None))
    assert len(fake.requests) == 2
    assert llm.delays == [0.25]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stall_after_20_chunks_is_cut_with_partial_text(llm, fake, transport):
    fake.script(Behavior(chunks=60, stall_after=20))
    deltas: list[str] = []
    loop = asyncio.get_running_loop()
    last_delta_at = loop.time()
    with pytest.raises(StreamStalled) as caught:
        async for event in llm.stream(request(f"{transport}/gpt-test")):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
                last_delta_at = loop.time()
    cut_after = loop.time() - last_delta_at
    assert len(deltas) == 20
    assert caught.value.partial_text == "".join(content_chunks(fake.text, 60)[:20])
    assert caught.value.reason == "PROVIDER_STALLED" and caught.value.code == "DEADLINE_EXCEEDED"
    assert cut_after >= 0.5 * 0.9  # cut by the watchdog (its setting is 0.5 s), not by the stream ending
    assert len(fake.requests) == 1  # text went out: never retried


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stream_without_usage_reports_estimated_usage(llm, fake, transport):
    fake.script(Behavior(usage=False))
    model = f"{transport}/gpt-test"
    result = await collect(llm, request(model))
    usage = result.completion.usage
    assert usage.estimated is True
    assert usage.completion_tokens == count_text_tokens(model, result.text)
    assert usage.prompt_tokens == count_message_tokens(model, [m.as_dict() for m in MESSAGES])


@pytest.mark.parametrize("model", ["fake/not-on-the-list", "other/gpt-test", "openai/gpt-3.5-turbo-instruct"])
async def test_model_outside_allowlist_is_refused_before_any_request(fake, settings, model):
    settings = settings.model_copy(update={"llm_allowed_models": ["sim/*", "fake/gpt-*"]})
    llm = build_llm_client(settings)
    with pytest.raises(ModelNotAllowed):
        await collect(llm, request(model))
    assert fake.requests == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_first_token_timeout_before_an_answer_is_typed_and_retried(llm, fake, settings, transport):
    """The provider had not answered: it bills nothing, so the router tries again."""
    llm.settings = settings.model_copy(update={"llm_first_token_timeout": 0.3, "llm_retries": 1})
    fake.script(Behavior(answer_delay=30), Behavior(answer_delay=30))
    with pytest.raises(ProviderTimeout) as caught:
        await collect(llm, request(f"{transport}/gpt-test"))
    assert caught.value.partial_text == "" and not caught.value.billed and len(fake.requests) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_first_token_timeout_after_a_200_is_billed_and_raised_to_the_caller(llm, fake, settings, transport):
    """The provider answered 200 and then sent nothing: it bills the call, so the router does not
    retry it (that would hide a billed call); the caller records it and retries as a new attempt."""
    llm.settings = settings.model_copy(update={"llm_first_token_timeout": 0.3, "llm_retries": 1})
    fake.script(Behavior(first_token_delay=30), Behavior(first_token_delay=30))
    with pytest.raises(ProviderTimeout) as caught:
        await collect(llm, request(f"{transport}/gpt-test"))
    assert caught.value.partial_text == "" and caught.value.billed and caught.value.retryable
    assert len(fake.requests) == 1


async def test_consumer_time_between_chunks_is_not_a_stall(llm, fake):
    """The watchdog times the network only: a slow consumer is never cut."""
    fake.script(Behavior(chunks=3))
    deltas = []
    async for event in llm.stream(request("fake/gpt-test")):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
            await asyncio.sleep(0.7)  # longer than the 0.5 s stall timeout
    assert len(deltas) == 3


async def test_server_errors_exhaust_retries_then_fall_back(fake, settings):
    settings = settings.model_copy(update={"llm_fallbacks": {"fake/primary": ["fake/backup"]}})
    llm = build_llm_client(settings)
    llm._sleep = lambda delay: asyncio.sleep(0)
    fake.script(Behavior(status=500), Behavior(status=503), Behavior(status=500), Behavior(chunks=5))
    result = await collect(llm, request("fake/primary"))
    assert [r.body["model"] for r in fake.requests] == ["primary"] * 3 + ["backup"]
    assert result.completion.model == "fake/backup" and len(result.deltas) == 5
    await llm.aclose()


async def test_non_retryable_error_is_typed_and_not_retried(llm, fake):
    fake.script(Behavior(status=400))
    with pytest.raises(ProviderError) as caught:
        await collect(llm, request("fake/gpt-test"))
    assert not caught.value.retryable and len(fake.requests) == 1 and "400" in caught.value.message


async def test_connection_closed_mid_stream_keeps_partial_text(llm, fake):
    fake.script(Behavior(chunks=30, close_after=5))
    with pytest.raises(ProviderError) as caught:
        await collect(llm, request("fake/gpt-test"))
    assert caught.value.partial_text == "".join(content_chunks(fake.text, 30)[:5])


async def test_max_tokens_gives_finish_reason_length(llm, fake):
    fake.script(Behavior(chunks=50))
    result = await collect(llm, request("fake/gpt-test", max_tokens=10))
    assert result.completion.finish_reason == "length" and len(result.deltas) == 10


async def test_canary_key_never_in_logs_or_errors(fake, settings, caplog, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    caplog.set_level(logging.DEBUG)
    settings = settings.model_copy(update={"llm_retries": 1, "llm_stall_timeout": 0.3})
    llm = build_llm_client(settings)
    llm._sleep = lambda delay: asyncio.sleep(0)
    errors: list[LLMError] = []
    for transport in TRANSPORTS:
        fake.script(
            Behavior(status=429, retry_after=0, echo_auth=True),
            Behavior(status=401, echo_auth=True),
            Behavior(status=500, echo_auth=True),
            Behavior(status=500, echo_auth=True),
            Behavior(chunks=30, stall_after=3),
        )
        for model in (f"{transport}/gpt-test", f"{transport}/gpt-test", f"{transport}/gpt-test", "nope/x"):
            with pytest.raises(LLMError) as caught:
                await collect(llm, request(model))
            errors.append(caught.value)
    await llm.aclose()
    assert any(CANARY in r.headers.get("authorization", "") for r in fake.requests)  # the key was used
    assert {type(e) for e in errors} >= {ProviderError, StreamStalled, ModelNotAllowed}
    assert any("you sent" in e.message for e in errors)  # the provider did echo something back
    for error in errors:
        assert CANARY not in str(error) and CANARY not in repr(error) and CANARY not in error.message
        assert CANARY not in repr(error.metadata) and CANARY not in error.partial_text
    assert CANARY not in caplog.text
    assert all(CANARY not in record.getMessage() for record in caplog.records)


async def test_rate_limited_error_when_retries_run_out(llm, fake, settings):
    llm.settings = settings.model_copy(update={"llm_retries": 0})
    fake.script(Behavior(status=429, retry_after=3))
    with pytest.raises(RateLimited) as caught:
        await collect(llm, request("fake/gpt-test"))
    assert caught.value.retry_after == 3 and caught.value.retryable


async def test_consumer_that_stops_early_closes_the_stream(llm, fake):
    """A cancelled debate stops reading: the provider stream is closed at once, not at GC."""
    fake.script(Behavior(chunks=200, chunk_delay=0.01))
    stream = llm.stream(request("fake/gpt-test"))
    async for event in stream:
        if isinstance(event, TextDelta):
            break
    await stream.aclose()
    pool = llm.provider_for("fake/gpt-test").pool()
    assert pool.busy() == 0 and pool.idle() == 0  # closed, not left mid-response nor put back for reuse


# ------------------------------------------------------------------ pushed streams (stream_to)


async def _pushed(llm, model: str, texts: list[str]):
    def sink(event):
        if isinstance(event, TextDelta):
            texts.append(event.text)

    return await stream_to(llm, request(model), sink)


@pytest.mark.parametrize(
    "behavior, error, reason",
    [
        (Behavior(chunks=60, stall_after=20), StreamStalled, "PROVIDER_STALLED"),
        (Behavior(chunks=60, close_after=20), ProviderError, "PROVIDER_ERROR"),
        (Behavior(chunks=60, bad_chunk="content_number", bad_chunk_after=20), ProviderBadChunk, "PROVIDER_BAD_CHUNK"),
        (Behavior(chunks=60, bad_chunk="not_json", bad_chunk_after=20), ProviderBadChunk, "PROVIDER_BAD_CHUNK"),
    ],
    ids=["stall", "dropped", "bad-shape", "not-json"],
)
async def test_a_pushed_stream_cut_midway_is_typed_billed_with_its_partial_text(llm, fake, behavior, error, reason):
    """stream_to on the lean path: the deltas before the cut reach the sink, in order; the error
    is the pulled stream's, billed, with that text, not retried."""
    fake.script(behavior)
    texts: list[str] = []
    started = asyncio.get_running_loop().time()
    with pytest.raises(error) as caught:
        await _pushed(llm, "fake/gpt-test", texts)
    sent = content_chunks(fake.text, 60)[:20]
    assert texts == sent and caught.value.partial_text == "".join(sent) and caught.value.reason == reason
    assert caught.value.billed and not caught.value.retryable and len(fake.requests) == 1
    if error is StreamStalled:
        assert asyncio.get_running_loop().time() - started >= 0.5 * 0.9  # the watchdog's stall limit
    assert llm.provider_for("fake/gpt-test").pool().busy() == 0


async def test_a_pushed_stream_whose_caller_is_cancelled_closes_its_connection(llm, fake):
    fake.script(Behavior(chunks=200, chunk_delay=0.01))
    texts: list[str] = []
    task = asyncio.create_task(_pushed(llm, "fake/gpt-test", texts))
    while not texts:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pool = llm.provider_for("fake/gpt-test").pool()
    assert pool.busy() == 0 and pool.idle() == 0
    for _ in range(100):
        if fake.billed:
            break
        await asyncio.sleep(0.01)
    assert [b.outcome for b in fake.billed] == ["disconnected"]


async def test_what_a_sink_raises_ends_the_pushed_stream_and_reaches_the_caller(llm, fake):
    fake.script(Behavior(chunks=50))
    seen: list[str] = []

    def sink(event):
        seen.append(event.text)
        if len(seen) == 3:
            raise ValueError("the hub refused the text")

    with pytest.raises(ValueError, match="refused"):
        await stream_to(llm, request("fake/gpt-test"), sink)
    assert len(seen) == 3 and llm.provider_for("fake/gpt-test").pool().busy() == 0


async def test_a_pushed_stream_reuses_its_connection_and_equals_the_pulled_one(llm, fake):
    fake.script(Behavior(chunks=30, reasoning_chunks=4), Behavior(chunks=30, reasoning_chunks=4))
    pulled = await read_whole(llm, request("fake/gpt-test"))
    pushed = await read_whole(llm, request("fake/gpt-test"), push=True)
    assert (pushed.text, pushed.reasoning, pushed.deltas) == (pulled.text, pulled.reasoning, pulled.deltas)
    assert pushed.completion == pulled.completion
    assert llm.provider_for("fake/gpt-test").pool().idle() == 1  # one connection, kept alive
