"""The scale harness's provider mode (tests/benchmarks/scale.py --provider fake) in a tiny run:
the debaters really go through the provider path. The fast fake provider, in a process of its
own, counted the chunks it served and the usage it reported, and the ledger priced exactly that
usage at the endpoint's declared price. No figure is checked against a limit (the harness reports
them)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.benchmarks import scale


@pytest.mark.e2e
async def test_scale_provider_mode_streams_every_debater_through_the_fake_provider():
    results = await scale.scale(
        [2],
        [],
        budget=150,
        subscriber_rounds=1,
        probes=1,
        tokens_per_second=400,
        first_token_latency=0.01,
        log_level="WARNING",
        provider="fake",
    )
    assert results["settings"]["provider"] == "fake"
    (simulated,) = results["debates"]
    (provider,) = results["provider_debates"]
    assert simulated["path"] == "simulated" and simulated["completed"] == 2 and simulated["provider_chunks"] == 0
    assert provider["path"] == "provider" and provider["completed"] == 2 and provider["stream_errors"] == 0
    calls, tokens = 2 * 4, 2 * 4 * scale.TOKENS_PER_TURN
    # The provider served every debater's turn: one stream a turn, one token a chunk.
    assert provider["provider_completed"] == calls
    assert provider["provider_chunks"] == tokens == provider["provider_completion_tokens"]
    # The ledger priced what the provider reported, at the endpoint's declared price.
    assert provider["debater_tokens"] == tokens
    price = scale.PROVIDER_PRICE
    expected = (
        provider["provider_prompt_tokens"] * Decimal(price["input_per_million"])
        + tokens * Decimal(price["output_per_million"])
    ) / 1_000_000
    assert provider["provider_prompt_tokens"] > 0
    assert Decimal(provider["debater_cost_usd"]) == expected
    # The simulated debaters never reached the provider, and are free.
    assert Decimal(simulated["debater_cost_usd"]) == 0 and simulated["debater_tokens"] > 0
    assert provider["orchestrator_cpu_per_chunk_us"] > 0 and provider["provider_cpu_s"] > 0
    comparison = scale.summary(results)["provider_path"]
    assert comparison["levels_compared"] == [2]
    assert comparison["cpu_per_token_ratio_provider_to_simulated"] > 0
    assert "service_errors" not in results, results["service_errors"]  # the services' ERROR lines


async def test_fast_provider_streams_one_token_a_chunk_with_its_usage_and_counts_a_client_that_left():
    """The fast fake provider, read by the lean path: every token its own chunk, the usage of what
    it sent, `max_tokens` honoured ("length"), its processes' counts summed; a stream the client
    gives up is counted as gone, not completed."""
    import asyncio

    from services.common.llm import (
        ChatMessage,
        CompletionRequest,
        Endpoint,
        LLMSettings,
        build_llm_client,
        collect,
        stream_to,
    )
    from tests.support.fake_openai import content_chunks, prompt_tokens_of
    from tests.support.fast_provider import DEFAULT_TEXT, spawn_fast_provider

    messages = (ChatMessage("system", "You argue for."), ChatMessage("user", "Motion: ban cars."))
    with spawn_fast_provider(processes=2, tokens_per_second=500, first_token_latency=0.01, chunks=30) as provider:
        llm = build_llm_client(
            LLMSettings(llm_allowed_models=["fast/*"], llm_endpoints={"fast": Endpoint(api_base=provider.base_url)})
        )
        try:
            whole = await collect(llm, CompletionRequest(model="fast/m", messages=messages, max_tokens=100), push=True)
            cut = await collect(llm, CompletionRequest(model="fast/m", messages=messages, max_tokens=12))

            def leave(event) -> None:
                raise RuntimeError("the client leaves")

            with pytest.raises(RuntimeError):
                await stream_to(llm, CompletionRequest(model="fast/m", messages=messages, max_tokens=100), leave)
            await asyncio.sleep(0.3)  # the provider's next due chunk finds the connection closed
        finally:
            await llm.aclose()
        stats = provider.stats()
    assert whole.deltas == content_chunks(DEFAULT_TEXT, 30) and whole.completion.finish_reason == "stop"
    body = {"messages": [m.as_dict() for m in messages]}
    assert whole.completion.usage.completion_tokens == 30
    assert whole.completion.usage.prompt_tokens == prompt_tokens_of(body)
    assert not whole.completion.usage.estimated
    assert len(cut.deltas) == 12 == cut.completion.usage.completion_tokens and cut.completion.finish_reason == "length"
    assert stats["requests"] == 3 and stats["completed"] == 2 and stats["gone"] == 1
    # The third stream sent a chunk or a few (it was sending while the client closed), never all 30.
    assert stats["completion_tokens"] == 42 and 42 < stats["chunks"] < 42 + 30


def test_service_errors_keep_each_errors_traceback_and_skip_other_services_lines():
    tail = [
        "[judge       ] 2026-11-30 23:37:47,148 ERROR judge grpc._cython.cygrpc Exception not handled",
        "[judge       ] Traceback (most recent call last):",
        "[orchestrator] 2026-11-30 23:37:47,150 INFO orchestrator stopped",
        '[judge       ]   File "server.pyx.pxi", line 812, in _schedule_rpc_coro',
        "[judge       ] asyncio.exceptions.CancelledError",
        "[judge       ] 2026-11-30 23:37:47,200 INFO judge stopped",
        "[accounting  ] 2026-11-30 23:37:47,300 ERROR accounting boom",
    ]
    assert scale.service_errors(tail) == [
        "\n".join([tail[0], tail[1], tail[3], tail[4]]),  # the judge's error with its traceback
        tail[6],
    ]
    assert scale.service_errors(tail[2:3] + tail[5:6]) == []
