"""services.common.tracing: the server interceptor with both kinds of streaming handler, the
client's context reaching the server, a failed model call's span, the log filter's ids; and
services.common.trace_context: a traceparent stored and read back."""

from __future__ import annotations

import logging

import grpc
import pytest
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, get_current_span

from services.common.channels import open_channel
from services.common.llm.base import ChatMessage, Completion, CompletionRequest, ProviderError, TextDelta, stream_to
from services.common.logs import ContextFilter
from services.common.settings import ServiceSettings
from services.common.trace_context import context_from_traceparent, traceparent
from services.common.tracing import TracedLLM, Tracing, traced_llm
from services.common.usage import Usage


def tracing_to_memory(name: str) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing = Tracing.from_settings(ServiceSettings(), name, exporter=exporter)
    assert tracing is not None
    return tracing, exporter


def test_no_endpoint_no_tracing():
    assert Tracing.from_settings(ServiceSettings(), "debate-x") is None
    llm = object()
    assert traced_llm(llm, None) is llm  # type: ignore[arg-type]


def test_the_traces_endpoint_wins_over_the_general_one():
    settings = ServiceSettings(
        otel_exporter_otlp_endpoint="http://a:4317", otel_exporter_otlp_traces_endpoint="http://b:4317"
    )
    from services.common.tracing import traces_endpoint

    assert traces_endpoint(settings) == "http://b:4317"


async def test_server_spans_for_generator_and_coroutine_streams_in_the_callers_trace():
    """grpc.aio serves a stream written with `yield` and one written with `await context.write`:
    both are served through the tracing interceptor, each a server span, child of the client span."""
    server_tracing, server_spans = tracing_to_memory("debate-server")
    client_tracing, client_spans = tracing_to_memory("debate-client")

    async def by_generator(request, context):
        for part in (b"a", b"b"):
            yield part

    async def by_writes(request, context):
        for part in (b"c", b"d"):
            await context.write(part)

    async def unary(request, context):
        return request

    identity = None
    handlers = {
        "Gen": grpc.unary_stream_rpc_method_handler(by_generator, identity, identity),
        "Write": grpc.unary_stream_rpc_method_handler(by_writes, identity, identity),
        "Echo": grpc.unary_unary_rpc_method_handler(unary, identity, identity),
    }
    server = grpc.aio.server(interceptors=[server_tracing.server_interceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.v1.Probe", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", health_checks=False, tracing=client_tracing)
    try:
        assert [r async for r in channel.unary_stream("/test.v1.Probe/Gen")(b"")] == [b"a", b"b"]
        assert [r async for r in channel.unary_stream("/test.v1.Probe/Write")(b"")] == [b"c", b"d"]
        assert await channel.unary_unary("/test.v1.Probe/Echo")(b"e") == b"e"
    finally:
        await channel.close()
        await server.stop(0)
    server_tracing.provider.force_flush()
    client_tracing.provider.force_flush()
    served = {s.name: s for s in server_spans.get_finished_spans()}
    called = {s.name: s for s in client_spans.get_finished_spans()}
    for method in ("Gen", "Write", "Echo"):
        name = f"/test.v1.Probe/{method}"
        assert served[name].kind == SpanKind.SERVER and called[name].kind == SpanKind.CLIENT
        assert served[name].context.trace_id == called[name].context.trace_id
        assert served[name].parent is not None and served[name].parent.span_id == called[name].context.span_id
        assert served[name].resource.attributes["service.name"] == "debate-server"


class _FailingLLM:
    async def stream(self, request):
        yield TextDelta("half an ans")
        raise ProviderError("the provider hung up", model=request.model, billed=True)


class _AnsweringLLM:
    async def stream(self, request):
        yield TextDelta("an answer")
        yield Completion(
            model="openai/gpt-4o-mini",
            usage=Usage(prompt_tokens=12, completion_tokens=3, cached_prompt_tokens=4),
            finish_reason="length",
        )


REQUEST = CompletionRequest(model="openai/gpt-4o", messages=(ChatMessage("user", "hi"),), max_tokens=64, seed=7)


async def test_a_model_call_is_a_chat_span_with_the_genai_attributes():
    tracing, spans = tracing_to_memory("debate-x")
    llm = TracedLLM(_AnsweringLLM(), tracing.tracer)
    completion = await stream_to(llm, REQUEST, lambda event: None)
    assert completion.usage.completion_tokens == 3
    tracing.provider.force_flush()
    (span,) = spans.get_finished_spans()
    assert span.name == "chat openai/gpt-4o" and span.kind == SpanKind.CLIENT
    a = span.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "openai/gpt-4o" and a["gen_ai.response.model"] == "openai/gpt-4o-mini"
    assert a["gen_ai.request.max_tokens"] == 64 and a["gen_ai.request.seed"] == 7
    assert a["gen_ai.usage.input_tokens"] == 12 and a["gen_ai.usage.output_tokens"] == 3
    assert a["gen_ai.usage.cache_read.input_tokens"] == 4
    assert a["gen_ai.response.finish_reasons"] == ("length",)
    assert "gen_ai.input.messages" not in a  # no prompt text in a span


async def test_a_failed_model_call_is_an_error_span_with_its_reason():
    tracing, spans = tracing_to_memory("debate-x")
    llm = TracedLLM(_FailingLLM(), tracing.tracer)
    with pytest.raises(ProviderError):
        await stream_to(llm, REQUEST, lambda event: None)
    tracing.provider.force_flush()
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "PROVIDER_ERROR"
    assert "gen_ai.usage.input_tokens" not in span.attributes


def test_log_records_carry_the_current_trace_and_span_ids():
    tracing, _ = tracing_to_memory("debate-x")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    ContextFilter(()).filter(record)
    assert (record.trace_id, record.span_id) == ("-", "-")
    with tracing.tracer.start_as_current_span("work") as span:
        ContextFilter(()).filter(record)
    context = span.get_span_context()
    assert record.trace_id == f"{context.trace_id:032x}" and record.span_id == f"{context.span_id:016x}"


def test_a_stop_does_not_wait_for_a_collector_that_does_not_answer(caplog):
    """The exporter retries an unreachable collector for seconds; a stopping service drops what is
    left after the flush's timeout instead (with a warning) and its provider stops."""
    settings = ServiceSettings(otel_exporter_otlp_endpoint="http://127.0.0.1:1")  # nothing listens
    tracing = Tracing.from_settings(settings, "debate-x")
    assert tracing is not None
    with tracing.tracer.start_as_current_span("lost"):
        pass
    with caplog.at_level(logging.WARNING, logger="services.common.tracing"):
        tracing.shutdown(timeout_s=0.2)
    assert "were dropped" in caplog.text
    assert tracing.exporter is not None and tracing.exporter._shutdown  # its retries ended


def test_a_stored_traceparent_gives_back_the_span_it_was_written_from():
    tracing, _ = tracing_to_memory("debate-x")
    with tracing.tracer.start_as_current_span("start") as span:
        written = traceparent(get_current())
    ids = span.get_span_context()
    assert written == f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"
    context = context_from_traceparent(written)
    assert context is not None
    read = get_current_span(context).get_span_context()
    assert (read.trace_id, read.span_id, read.is_remote) == (ids.trace_id, ids.span_id, True)
    with tracing.tracer.start_as_current_span("child", context=context) as child:
        assert child.parent is not None and child.parent.span_id == ids.span_id
    assert traceparent(Context()) == ""  # no span: nothing to store
    assert context_from_traceparent("") is None and context_from_traceparent("00-junk") is None
    tracing.shutdown()
