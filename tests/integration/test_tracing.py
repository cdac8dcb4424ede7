"""OpenTelemetry traces (issue 17, part 2) and JSON logs.

The three services run in this process with OTEL_EXPORTER_OTLP_ENDPOINT pointed at an OTLP
receiver started here (tests/support/otlp_receiver.py): a real gRPC server implementing the
collector's TraceService (opentelemetry-proto's own generated service), which keeps every span
it is sent. A simulated
2-round debate is created and started by a caller that sends a W3C `traceparent` (as an
instrumented client does); the spans the services export are then read back from the receiver:
one trace covers the three services, with the debate's turns, their model calls (GenAI
attributes, token counts equal to what accounting recorded), the usage records and the judge's
calls. With the setting unset, nothing of OpenTelemetry is installed.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg
from opentelemetry import trace

from services.common.logs import ContextFilter, log_formatter
from services.common.tracing import AnyStreamServerInterceptor, TracedLLM
from tests.reliability.inprocess import InProcessSuite
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan

INSTANT = {"sim_first_token_latency": 0, "sim_tokens_per_second": 0}
ORCH, JUDGE, ACCOUNTING = "debate-orchestrator", "debate-judge", "debate-accounting"


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def json_log():
    """The records of the services' loggers, formatted as LOG_FORMAT=json formats them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter(()))
    handler.setFormatter(log_formatter("suite", "json"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="module")
def suite(tmp_path_factory, receiver, json_log):
    overrides = {
        name: {"otel_exporter_otlp_endpoint": receiver.endpoint, **INSTANT}
        for name in ("accounting", "judge", "orchestrator")
    }
    suite = InProcessSuite(tmp_path_factory.mktemp("tracing"), overrides=overrides)
    suite.start()
    yield suite
    suite.stop()


def debate_config() -> c.DebateConfig:
    return c.DebateConfig(
        topic="Cities should ban private cars from their centres",
        participants=[
            c.Participant(name="Ada", model="sim/debater", persona="a pragmatic economist", stance="for"),
            c.Participant(name="Milo", model="sim/debater", persona="a sceptical historian", stance="against"),
        ],
        format=c.DebateFormat(round_limit=2),
    )


@dataclass
class Debate:
    debate_id: str
    trace_id: str
    caller_span_id: str
    events: list
    spans: list[ReceivedSpan]


def flush(suite: InProcessSuite) -> None:
    for service in suite.services.values():
        assert service.tracing is not None
        assert service.tracing.provider.force_flush(10_000)


@pytest.fixture(scope="module")
def debate(suite, receiver) -> Debate:
    """A 2-round debate created and started by a caller in trace `trace_id`, watched to its end;
    the spans of its trace once the `debate` span has been exported."""
    trace_id, caller_span_id = secrets.token_hex(16), secrets.token_hex(8)
    metadata = (("traceparent", f"00-{trace_id}-{caller_span_id}-01"),)
    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        stub = pbg.OrchestratorServiceStub(channel)
        debate_id = stub.CreateDebate(
            pb.CreateDebateRequest(config=debate_config()), metadata=metadata
        ).debate.debate_id
        stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), metadata=metadata)
        events = [
            r.event
            for r in stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=0))
        ]
    assert events[-1].WhichOneof("payload") == "debate_completed"
    deadline = time.monotonic() + 30
    while not any(s.name == "debate" and s.trace_id == trace_id for s in receiver.spans):
        assert time.monotonic() < deadline, "the debate's span was never exported"
        flush(suite)
        time.sleep(0.05)
    flush(suite)
    return Debate(debate_id, trace_id, caller_span_id, events, [s for s in receiver.spans if s.trace_id == trace_id])


def named(spans: list[ReceivedSpan], name: str, service: str | None = None) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name and (service is None or s.service == service)]


def one(spans: list[ReceivedSpan], name: str, service: str | None = None) -> ReceivedSpan:
    found = named(spans, name, service)
    assert len(found) == 1, (name, service, [(s.service, s.name) for s in spans])
    return found[0]


def test_one_trace_spans_the_three_services_from_create_to_verdict(debate):
    spans = debate.spans
    assert {s.service for s in spans} == {ORCH, JUDGE, ACCOUNTING}
    orch = "debate.orchestrator.v1.OrchestratorService"
    create = one(spans, f"/{orch}/CreateDebate", ORCH)
    start = one(spans, f"/{orch}/StartDebate", ORCH)
    assert create.parent == start.parent == debate.caller_span_id  # the caller's traceparent
    assert create.kind == start.kind == trace.SpanKind.SERVER.value + 1  # OTLP's SPAN_KIND_SERVER
    run = one(spans, "debate", ORCH)
    assert run.parent == start.span_id  # the debate runs after StartDebate answered, in its trace
    assert run.attributes["debate.id"] == debate.debate_id
    assert run.attributes["debate.resumed"] is False
    assert run.links == []  # CreateDebate is in this trace already
    assert not named(spans, f"/{orch}/StreamDebateEvents")  # a watcher's stream is not traced
    turns = named(spans, "turn", ORCH)
    assert sorted((t.attributes["debate.round_number"], t.attributes["debate.participant"]) for t in turns) == [
        (1, "Ada"),
        (1, "Milo"),
        (2, "Ada"),
        (2, "Milo"),
    ]
    assert all(t.parent == run.span_id for t in turns)
    # The judge's calls: the orchestrator's client span, the judge's server span its child.
    by_id = {s.span_id: s for s in spans}
    for method, count in (("EvaluateRound", 2), ("RenderVerdict", 1)):
        name = f"/debate.judge.v1.JudgeService/{method}"
        clients, servers = named(spans, name, ORCH), named(spans, name, JUDGE)
        assert len(clients) == len(servers) == count, method
        assert {s.parent for s in servers} == {s.span_id for s in clients}
        assert all(by_id[s.parent].name in ("debate", "turn") or s.parent == run.span_id for s in clients)
    # The usage records: accounting's server spans of the calls that recorded them, in this trace.
    batches = named(spans, "/debate.accounting.v1.AccountingService/BatchRecordUsage", ACCOUNTING)
    assert batches, [(s.service, s.name) for s in spans]
    # The final cost came with the verdict's usage records (cost_debate_ids): no call of its own.
    assert not named(spans, "/debate.accounting.v1.AccountingService/GetDebateCost", ACCOUNTING)
    assert any(e.WhichOneof("payload") == "debate_completed" for e in debate.events)


def test_model_calls_follow_the_genai_conventions_with_the_recorded_tokens(debate):
    spans = debate.spans
    turns = {s.span_id: s for s in named(spans, "turn", ORCH)}
    completed = {
        (e.turn_completed.turn.round_number, e.turn_completed.turn.participant): e.turn_completed.turn
        for e in debate.events
        if e.WhichOneof("payload") == "turn_completed"
    }
    chats = named(spans, "chat sim/debater", ORCH)
    assert len(chats) == 4
    for chat in chats:
        assert chat.kind == trace.SpanKind.CLIENT.value + 1
        turn = turns[chat.parent]  # the model call is the turn's child
        recorded = completed[(turn.attributes["debate.round_number"], turn.attributes["debate.participant"])]
        a = chat.attributes
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "sim"
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "sim/debater"
        assert a["gen_ai.request.max_tokens"] > 0
        assert a["gen_ai.response.finish_reasons"] in (("stop",), ("length",))
        assert a["gen_ai.usage.input_tokens"] == recorded.usage.prompt_tokens > 0
        assert a["gen_ai.usage.output_tokens"] == recorded.usage.completion_tokens > 0
    judge_chats = named(spans, "chat sim/judge", JUDGE)
    assert len(judge_chats) >= 3  # two assessments and a verdict
    judge_servers = {s.span_id for s in spans if s.service == JUDGE and s.name.startswith("/debate.judge")}
    assert all(s.parent in judge_servers for s in judge_chats)
    # Every model call of the debate, debaters' and judge's, adds up to what accounting priced.
    cost = debate.events[-1].debate_completed.cost
    model_spans = chats + judge_chats
    assert sum(s.attributes["gen_ai.usage.input_tokens"] for s in model_spans) == cost.usage.prompt_tokens
    assert sum(s.attributes["gen_ai.usage.output_tokens"] for s in model_spans) == cost.usage.completion_tokens


def test_usage_records_are_spans_of_the_debate_linked_from_their_batch(debate):
    spans = debate.spans
    records = named(spans, "record_usage", ORCH)
    keys = {r.attributes["debate.usage.request_id"] for r in records}
    for round_number in (1, 2):
        for name in ("Ada", "Milo"):
            assert f"debates/{debate.debate_id}/rounds/{round_number}/turns/{name}/attempts/1" in keys
    turns = {s.span_id: s for s in named(spans, "turn", ORCH)}
    turn_records = [r for r in records if r.parent in turns]
    assert len(turn_records) == 4
    for record in turn_records:
        assert record.attributes["gen_ai.usage.output_tokens"] > 0
    batches = named(spans, "record_usage_batch", ORCH)
    linked = {link for batch in batches for link in batch.links}
    assert {r.span_id for r in records} <= linked  # each record's batch links to it
    by_id = {s.span_id: s for s in spans}
    for batch in batches:
        assert by_id[batch.parent].name == "record_usage"


def test_a_json_log_line_carries_the_trace_id_of_the_debate(debate, json_log):
    lines = [json.loads(line) for line in json_log.getvalue().splitlines() if line.strip()]
    judged = [line for line in lines if line["logger"] == "services.judge.engine" and "judged" in line["message"]]
    assert judged, lines[-5:]
    for line in judged:
        assert {"time", "level", "logger", "message", "trace_id", "span_id", "debate_id", "request_id"} <= set(line)
        assert line["trace_id"] == debate.trace_id
        assert len(line["span_id"]) == 16 and line["span_id"] != "-"


def test_log_format_json_is_one_object_a_line_from_a_service_process(tmp_path):
    env = {**os.environ, "LOG_FORMAT": "json", "PORT": "0", "DATA_DIR": str(tmp_path)}
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "services.accounting"], env=env, stderr=subprocess.PIPE, text=True
    )
    lines = []
    try:
        while not lines or not lines[-1]["message"].startswith("serving"):
            text = process.stderr.readline()
            assert text, f"the service exited: {lines}"
            lines.append(json.loads(text))  # every line is one JSON object
    finally:
        process.terminate()
        process.wait(10)
    serving = lines[-1]
    assert serving["level"] == "INFO" and serving["service"] == "accounting"
    assert serving["logger"] == "services.common.server"
    assert serving["trace_id"] == "-" and serving["time"].endswith("+00:00")


def test_traces_are_off_without_an_endpoint(tmp_path):
    """No endpoint: no tracer provider (the global one stays the API's proxy), no interceptor of
    OpenTelemetry in any server's chain, no wrapper around the model client."""
    suite = InProcessSuite(tmp_path, overrides={"judge": dict(INSTANT), "orchestrator": dict(INSTANT)})
    suite.start()
    try:
        for name, service in suite.services.items():
            assert service.tracing is None, name
            assert not any(isinstance(i, AnyStreamServerInterceptor) for i in service.interceptors), name
        engine = suite.services["orchestrator"].engine
        assert engine.turns.tracer is None and engine.lifecycle.tracer is None
        assert not isinstance(engine.turns.llm, TracedLLM)
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    finally:
        suite.stop()


def test_an_otel_service_name_replaces_the_default(tmp_path, receiver):
    from services.accounting.settings import AccountingSettings
    from services.common.tracing import Tracing

    settings = AccountingSettings(otel_exporter_otlp_endpoint=receiver.endpoint, otel_service_name="ledger-eu")
    tracing = Tracing.from_settings(settings, ACCOUNTING)
    assert tracing is not None and tracing.service_name == "ledger-eu"
    with tracing.tracer.start_as_current_span("probe"):
        pass
    tracing.shutdown()  # flushes
    assert [s.service for s in receiver.spans if s.name == "probe"] == ["ledger-eu"]


def test_a_caller_without_trace_context_gets_the_debate_linked_to_its_create(suite, receiver, debate):
    """CreateDebate and StartDebate without `traceparent`: two traces. The debate runs in
    StartDebate's, and its `debate` span links to the CreateDebate span of the other."""
    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        stub = pbg.OrchestratorServiceStub(channel)
        debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=debate_config())).debate.debate_id
        stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id))
        for _ in stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=0)):
            pass
    deadline = time.monotonic() + 30
    orch = "/debate.orchestrator.v1.OrchestratorService"
    while not [s for s in named(receiver.spans, "debate") if s.attributes["debate.id"] == debate_id]:
        assert time.monotonic() < deadline, "the debate's span was never exported"
        flush(suite)
        time.sleep(0.05)
    (run,) = [s for s in named(receiver.spans, "debate") if s.attributes["debate.id"] == debate_id]
    (start,) = [s for s in named(receiver.spans, f"{orch}/StartDebate") if s.span_id == run.parent]
    creates = [s for s in named(receiver.spans, f"{orch}/CreateDebate") if s.span_id in run.links]
    assert len(creates) == 1 and creates[0].trace_id != run.trace_id == start.trace_id
