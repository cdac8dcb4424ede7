"""Prometheus metrics (issue 17, part 1): the three services in this process with METRICS_PORT=0,
a simulated debate run through them over real gRPC, then each service's real /metrics endpoint
scraped over HTTP and parsed with prometheus-client's own parser.

Each metric family must be exposed and must have moved by what the debate did; no label value may
be a debate id; and with METRICS_PORT unset no metrics port is opened at all.
"""

from __future__ import annotations

import time
import urllib.request

import grpc
import psutil
import pytest
from debate.accounting.v1 import accounting_pb2 as acc
from debate.accounting.v1 import accounting_pb2_grpc as accg
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg
from prometheus_client.parser import text_string_to_metric_families

from services.common.llm import ChatMessage, CompletionRequest, build_llm_client, collect, stream_to
from services.common.metrics import LLMMetrics, MetricsServer, ServiceMetrics
from services.common.settings import load_settings
from services.judge.settings import JudgeSettings
from tests.reliability.inprocess import InProcessSuite
from tests.support.fake_openai import Behavior
from tests.support.fixtures import FAKE_KEY_ENV, fake_openai, fake_openai_server, settings_for  # noqa: F401
from tests.support.metrics import scrape, value

INSTANT = {"sim_first_token_latency": 0, "sim_tokens_per_second": 0}


def debate_config(rounds: int = 2) -> c.DebateConfig:
    return c.DebateConfig(
        topic="Cities should ban private cars from their centres",
        participants=[
            c.Participant(name="Ada", model="sim/debater", persona="a pragmatic economist", stance="for"),
            c.Participant(name="Milo", model="sim/debater", persona="a sceptical historian", stance="against"),
        ],
        format=c.DebateFormat(round_limit=rounds),
    )


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    overrides = {name: {"metrics_port": 0, **INSTANT} for name in ("accounting", "judge", "orchestrator")}
    suite = InProcessSuite(tmp_path_factory.mktemp("metrics"), overrides=overrides)
    suite.start()
    yield suite
    suite.stop()


def url(suite: InProcessSuite, name: str) -> str:
    server = suite.services[name].metrics_server
    assert server is not None, f"{name} serves no metrics"
    return server.url


@pytest.fixture(scope="module")
def debate(suite):
    """One finished debate, watched to its end, plus one refused create; its id."""
    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        stub = pbg.OrchestratorServiceStub(channel)
        debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=debate_config())).debate.debate_id
        stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id))
        kinds = [
            r.event.WhichOneof("payload")
            for r in stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=0))
        ]
        assert "debate_completed" in kinds
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateDebate(pb.CreateDebateRequest(config=c.DebateConfig(topic="")))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError):
            stub.GetDebate(pb.GetDebateRequest(debate_id="no-such-debate"))
    return debate_id


def test_grpc_server_and_client_calls_are_counted_by_method_and_code(suite, debate):
    orch = scrape(url(suite, "orchestrator"))
    service = "debate.orchestrator.v1.OrchestratorService"
    assert (
        value(orch, "grpc_server_handled_total", grpc_service=service, grpc_method="CreateDebate", grpc_code="OK") == 1
    )
    assert (
        value(
            orch,
            "grpc_server_handled_total",
            grpc_service=service,
            grpc_method="CreateDebate",
            grpc_code="INVALID_ARGUMENT",
        )
        == 1
    )
    assert value(orch, "grpc_server_handled_total", grpc_method="GetDebate", grpc_code="NOT_FOUND") == 1
    assert (
        value(
            orch,
            "grpc_server_handled_total",
            grpc_type="server_stream",
            grpc_method="StreamDebateEvents",
            grpc_code="OK",
        )
        == 1
    )
    assert value(orch, "grpc_server_started_total", grpc_method="CreateDebate") == 2
    assert value(orch, "grpc_server_handling_seconds_count", grpc_method="CreateDebate") == 2
    assert value(orch, "grpc_server_handling_seconds_sum", grpc_method="StreamDebateEvents") > 0
    # The orchestrator's own calls to the judge and accounting, and those services' side of them.
    judge_calls = value(orch, "grpc_client_handled_total", grpc_service="debate.judge.v1.JudgeService", grpc_code="OK")
    assert judge_calls >= 3  # two rounds assessed and a verdict
    acc_calls = value(
        orch, "grpc_client_handled_total", grpc_service="debate.accounting.v1.AccountingService", grpc_code="OK"
    )
    assert acc_calls >= 1
    assert value(orch, "grpc_client_handling_seconds_count", grpc_service="debate.judge.v1.JudgeService") == judge_calls
    judge = scrape(url(suite, "judge"))
    assert value(judge, "grpc_server_handled_total", grpc_service="debate.judge.v1.JudgeService", grpc_code="OK") == (
        judge_calls
    )
    accounting = scrape(url(suite, "accounting"))
    assert value(accounting, "grpc_server_handled_total", grpc_code="OK") >= acc_calls


def test_debate_and_event_metrics_move(suite, debate):
    orch = scrape(url(suite, "orchestrator"))
    assert value(orch, "debate_debates_started_total") == 1
    assert value(orch, "debate_debates_ended_total", state="COMPLETED", reason="VERDICT") == 1
    assert value(orch, "debate_debates_running") == 0
    assert value(orch, "debate_debates_queued") == 0
    appended = value(orch, "debate_events_appended_total")
    assert appended >= 10  # state changes, rounds, turns, token deltas, assessments, verdict
    sent = value(orch, "debate_event_messages_sent_total")
    assert sent >= appended  # one watcher read every event, one a message
    assert value(orch, "debate_event_subscribers") == 0  # it left at the end
    assert "debate_event_subscribers_cut" in orch
    relayed = value(orch, "debate_event_relay_seconds_count")
    assert 1 <= relayed <= sent  # once per message sent after a wake, never more than the messages
    assert value(orch, "debate_event_relay_seconds_sum") > 0


@pytest.mark.parametrize("service", ["orchestrator", "judge", "accounting"])
def test_every_service_measures_its_event_loop_and_its_process(suite, debate, service):
    families = scrape(url(suite, service))
    assert value(families, "asyncio_event_loop_lag_seconds_count") >= 1
    assert value(families, "process_cpu_seconds_total") > 0
    assert value(families, "process_resident_memory_bytes") > 0
    assert value(families, "process_open_fds") > 0


def test_model_metrics_move_with_allowlisted_model_labels(suite, debate):
    orch = scrape(url(suite, "orchestrator"))
    turns = 4  # 2 debaters x 2 rounds
    model = {"gen_ai_request_model": "sim/debater"}
    assert value(orch, "gen_ai_client_token_usage_count", gen_ai_token_type="output", **model) == turns
    assert value(orch, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **model) > turns
    assert value(orch, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **model) > turns
    assert value(orch, "gen_ai_client_time_to_first_token_seconds_count", **model) == turns
    assert value(orch, "gen_ai_client_operation_duration_seconds_count", **model) == turns
    for family in ("llm_provider_errors", "llm_retries", "llm_fallbacks"):
        assert family in orch
    judge = scrape(url(suite, "judge"))
    assert (
        value(judge, "gen_ai_client_token_usage_count", gen_ai_request_model="sim/judge", gen_ai_token_type="output")
        >= 3
    )


def test_judge_metrics_move(suite, debate):
    judge = scrape(url(suite, "judge"))
    # Two rounds assessed and a verdict, each with its agreements observed once.
    assert value(judge, "judge_ordering_agreement_count", kind="round") == 2
    assert value(judge, "judge_panel_agreement_count", kind="round") == 2
    assert value(judge, "judge_ordering_agreement_count", kind="verdict") == 1
    assert 0 <= value(judge, "judge_panel_agreement_sum", kind="verdict") <= 1
    for family in ("judge_outputs_invalid", "judge_repairs", "judge_ballots_failed"):
        assert family in judge  # the simulated judge answers validly: exposed, at zero


def test_accounting_metrics_move(suite, debate):
    accounting = scrape(url(suite, "accounting"))
    writes = value(accounting, "accounting_ledger_writes_total")
    assert writes >= 4 + 3  # the four turns, and at least one judge call per assessment and for the verdict
    costs = [lab for name, lab, _ in accounting["accounting_cost_usd"] if name == "accounting_cost_usd_total"]
    assert {"gen_ai_request_model": "sim/debater", "role": "debater"} in costs
    # A repeated record is absorbed; a priced call on a tiny cap is refused its reservation.
    dupes = value(accounting, "accounting_ledger_duplicates_total")
    refused = value(accounting, "accounting_reservations_total", outcome="refused")
    usage = c.TokenUsage(prompt_tokens=1000, completion_tokens=500)
    record = acc.RecordUsageRequest(
        request_id="metrics/test/1",
        debate_id="metrics-debate",
        participant="Ada",
        role=c.ROLE_DEBATER,
        round_number=1,
        model="gpt-4",
        attempt=1,
        usage=usage,
    )
    with grpc.insecure_channel(suite.addresses["accounting"]) as channel:
        stub = accg.AccountingServiceStub(channel)
        assert not stub.RecordUsage(record).duplicate
        assert stub.RecordUsage(record).duplicate
        stub.SetDebateBudget(
            acc.SetDebateBudgetRequest(debate_id="metrics-debate", cap=c.Money(currency_code="USD", amount="0.01"))
        )
        reserve = acc.ReserveBudgetRequest(
            reservation_id="metrics/r/1",
            debate_id="metrics-debate",
            model="gpt-4",
            prompt_tokens=1000,
            max_completion_tokens=1000,
        )
        assert not stub.ReserveBudget(reserve).granted
    after = scrape(url(suite, "accounting"))
    assert value(after, "accounting_ledger_writes_total") == writes + 1
    assert value(after, "accounting_ledger_duplicates_total") == dupes + 1
    assert value(after, "accounting_reservations_total", outcome="refused") == refused + 1
    # gpt-4: $30 and $60 per million tokens in and out: 0.03 + 0.03.
    assert value(after, "accounting_cost_usd_total", gen_ai_request_model="gpt-4") == pytest.approx(0.06)


def test_no_label_is_a_debate_id(suite, debate):
    for name in ("orchestrator", "judge", "accounting"):
        with urllib.request.urlopen(url(suite, name), timeout=10) as response:
            text = response.read().decode()
        assert debate not in text
        assert "no-such-debate" not in text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                assert not {"debate_id", "tenant", "request_id"} & set(sample.labels), sample


def test_metrics_are_off_without_the_setting(tmp_path):
    """METRICS_PORT unset: no metrics and no metrics server; the only ports the suite opens are its gRPC ones."""
    before = listening_ports()
    suite = InProcessSuite(tmp_path, overrides={"judge": dict(INSTANT)})
    suite.start()
    try:
        for name, service in suite.services.items():
            assert service.metrics is None, name
            assert service.metrics_server is None, name
        grpc_ports = {int(address.rsplit(":", 1)[1]) for address in suite.addresses.values()}
        assert listening_ports() - before == grpc_ports
    finally:
        suite.stop()


def listening_ports() -> set[int]:
    return {conn.laddr.port for conn in psutil.Process().net_connections("tcp") if conn.status == psutil.CONN_LISTEN}


def test_accounting_calls_without_the_orchestrator_are_counted(suite):
    """A call refused by accounting's validation counts under its code, on accounting's own endpoint."""
    before = value(scrape(url(suite, "accounting")), "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT")
    with grpc.insecure_channel(suite.addresses["accounting"]) as channel, pytest.raises(grpc.RpcError) as refused:
        accg.AccountingServiceStub(channel).CalculateCost(acc.CalculateCostRequest(model=""))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = value(scrape(url(suite, "accounting")), "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT")
        if after == before + 1:
            break
        time.sleep(0.05)
    assert after == before + 1


@pytest.fixture
def fake(fake_openai):  # noqa: F811 - the imported fixture
    return fake_openai


@pytest.mark.parametrize("pushed", [False, True], ids=["pulled", "pushed"])
async def test_provider_errors_retries_and_fallbacks_are_counted(fake, monkeypatch, pushed):
    """A real provider path (the local OpenAI-compatible server): two 5xx answers retried, a third
    that exhausts the retries, then the fallback answers; every step in the metrics, scraped."""
    monkeypatch.setenv(FAKE_KEY_ENV, "sk-test-key-0123456789")
    settings = settings_for(fake, llm_retries=2, llm_backoff_base=0.0, llm_fallbacks={"fake/primary": ["fake/backup"]})
    metrics = ServiceMetrics()
    llm = build_llm_client(settings, metrics=LLMMetrics(metrics.registry))
    server = MetricsServer(metrics.registry, "127.0.0.1", 0)
    try:
        fake.script(Behavior(status=500), Behavior(status=503), Behavior(status=500), Behavior(chunks=5))
        call = CompletionRequest(model="fake/primary", messages=(ChatMessage("user", "Your turn."),))
        if pushed:
            completion = await stream_to(llm, call, lambda delta: None)
        else:
            completion = (await collect(llm, call)).completion
        assert completion.model == "fake/backup"
        families = scrape(server.url)
    finally:
        server.close()
        await llm.aclose()
    primary, backup = {"gen_ai_request_model": "fake/primary"}, {"gen_ai_request_model": "fake/backup"}
    assert value(families, "llm_provider_errors_total", reason="PROVIDER_ERROR", **primary) == 3
    assert value(families, "llm_retries_total", **primary) == 2
    assert value(families, "llm_fallbacks_total", fallback_model="fake/backup", **primary) == 1
    assert value(families, "gen_ai_client_time_to_first_token_seconds_count", **backup) == 1
    assert value(families, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **backup) == 5
    assert value(families, "gen_ai_client_token_usage_count", **primary) == 0  # no usage from failed calls


@pytest.mark.parametrize(("given", "port"), [(None, None), ("", None), ("  ", None), ("0", 0), ("9464", 9464)])
def test_metrics_port_setting(monkeypatch, given, port):
    """Unset or empty: off (None); 0: any free port; a number: that port."""
    if given is None:
        monkeypatch.delenv("METRICS_PORT", raising=False)
    else:
        monkeypatch.setenv("METRICS_PORT", given)
    assert load_settings(JudgeSettings, []).metrics_port == port
    assert load_settings(JudgeSettings, ["--metrics-port", "9465"]).metrics_port == 9465
