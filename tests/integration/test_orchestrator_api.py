"""The orchestrator's public API over a real gRPC channel, with in-process judge, accounting
and model stand-ins (tests/support/orchestrator_fakes.py): validation, lifecycle, events,
queueing, cancel, budget, paging. Every test runs on both stores, SQLite and PostgreSQL (the
orchestrator_backend fixture). The full suite with the real services is in
test_orchestrator_suite.py."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.common.grpc_errors import error_details
from services.orchestrator.server import build_service
from services.orchestrator.settings import OrchestratorSettings
from tests.support.orchestrator_fakes import MemoryAccounting, MemoryJudge, ScriptedLLM

S = pb.DebateState


def config(n: int = 2, rounds: int = 2, **kwargs) -> c.DebateConfig:
    return c.DebateConfig(
        topic="Should cities ban cars from their centres?",
        participants=[
            c.Participant(
                name=f"debater{i}",
                model="sim/debater",
                persona=f"persona {i}",
                stance="for" if i % 2 == 0 else "against",
            )
            for i in range(n)
        ],
        format=c.DebateFormat(round_limit=rounds, turn_order=kwargs.pop("turn_order", c.TURN_ORDER_SIMULTANEOUS)),
        **kwargs,
    )


class Harness:
    def __init__(self, service, stub, llm, accounting, judge, address=""):
        self.service, self.stub, self.llm, self.accounting, self.judge = service, stub, llm, accounting, judge
        self.address = address

    async def create(self, cfg: c.DebateConfig, request_id: str = "") -> pb.Debate:
        return (await self.stub.CreateDebate(pb.CreateDebateRequest(config=cfg, request_id=request_id))).debate

    async def start(self, debate_id: str) -> pb.DebateSummary:
        return (await self.stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id))).debate

    async def events(self, debate_id: str, after: int = 0, limit: int | None = None) -> list[pb.DebateEvent]:
        out = []
        call = self.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=after))
        async for response in call:
            out.append(response.event)
            if limit is not None and len(out) >= limit:
                call.cancel()
                break
        return out

    async def run(self, cfg: c.DebateConfig) -> tuple[pb.Debate, list[pb.DebateEvent]]:
        debate = await self.create(cfg)
        await self.start(debate.debate_id)
        events = await self.events(debate.debate_id)
        return (await self.stub.GetDebate(pb.GetDebateRequest(debate_id=debate.debate_id))).debate, events


@pytest.fixture
async def orchestrator(orchestrator_backend, request):
    options = dict(getattr(request, "param", {}))
    llm = options.pop("llm", None) or ScriptedLLM(chunks=12)
    accounting, judge = MemoryAccounting(), MemoryJudge()
    settings = OrchestratorSettings(port=0, **orchestrator_backend.settings(), **options)
    service = await build_service(settings, llm=llm, judge=judge, accounting=accounting)
    port = await service.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield Harness(service, pbg.OrchestratorServiceStub(channel), llm, accounting, judge, f"127.0.0.1:{port}")
    await channel.close()
    await service.stop(0)


def kinds(events) -> list[str]:
    return [e.WhichOneof("payload") for e in events]


async def test_bad_config_gets_one_violation_per_problem_and_stores_nothing(orchestrator):
    bad = c.DebateConfig(
        topic="  ",
        participants=[
            c.Participant(name="a", model="sim/debater"),
            c.Participant(name="a", model="nope/x"),
            c.Participant(name="b/c", model="sim/debater", persona="p" * 5000),
        ],
        format=c.DebateFormat(round_limit=21),
        max_tokens_per_turn=-1,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orchestrator.create(bad)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(caught.value)
    fields = [f for f, _ in violations]
    assert info.reason == "INVALID_ARGUMENT"
    assert sorted(fields) == sorted(
        [
            "config.topic",
            "config.participants[1].name",
            "config.participants[1].model",
            "config.participants[2].name",
            "config.participants[2].persona",
            "config.format.round_limit",
            "config.max_tokens_per_turn",
        ]
    )
    listed = await orchestrator.stub.ListDebates(pb.ListDebatesRequest())
    assert list(listed.debates) == []


async def test_create_is_idempotent_by_request_id(orchestrator):
    first = await orchestrator.create(config(), request_id="req-1")
    again = await orchestrator.create(config(n=3), request_id="req-1")
    other = await orchestrator.create(config(), request_id="req-2")
    assert first.debate_id == again.debate_id != other.debate_id
    assert first.state == S.DEBATE_STATE_CREATED
    assert first.config.format.turn_order == c.TURN_ORDER_SIMULTANEOUS  # defaults filled in
    assert first.config.judge.models == ["sim/judge"]


@pytest.mark.parametrize("debaters", [2, 3, 4])
async def test_a_debate_runs_to_a_verdict_with_gap_free_events(orchestrator, debaters):
    debate, events = await orchestrator.run(config(n=debaters, rounds=2))
    assert debate.state == S.DEBATE_STATE_COMPLETED
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert debate.last_sequence == len(events)
    assert [len(r.turns) for r in debate.rounds] == [debaters, debaters]
    assert all(r.HasField("assessment") for r in debate.rounds)
    assert debate.verdict.winner
    k = kinds(events)
    assert k[0] == "state_changed" and k[-1] == "debate_completed"
    assert k.count("turn_completed") == 2 * debaters and k.count("round_assessed") == 2
    # every turn's text arrived as deltas, in order, before its TurnCompleted
    for turn in (t for r in debate.rounds for t in r.turns):
        deltas = "".join(
            e.token_delta.text
            for e in events
            if e.WhichOneof("payload") == "token_delta"
            and e.token_delta.participant == turn.participant
            and e.token_delta.round_number == turn.round_number
        )
        assert deltas == turn.text
    keys = set(orchestrator.accounting.records)
    for turn in (t for r in debate.rounds for t in r.turns):
        assert f"debates/{debate.debate_id}/rounds/{turn.round_number}/turns/{turn.participant}/attempts/1" in keys
    judge_rows = [r for r in orchestrator.accounting.records.values() if r.role in (c.ROLE_JUDGE, c.ROLE_VERDICT)]
    assert len(judge_rows) == 3
    total = sum(float(r.cost.amount) for r in orchestrator.accounting.records.values())
    assert float(debate.cost.total.amount) == pytest.approx(total)


async def test_sequential_debaters_see_the_earlier_turns_of_their_round(orchestrator):
    debate, _ = await orchestrator.run(config(n=3, rounds=1, turn_order=c.TURN_ORDER_SEQUENTIAL))
    assert debate.state == S.DEBATE_STATE_COMPLETED
    seen = [sum(1 for m in r.messages if m.role in ("user", "assistant")) - 1 for r in orchestrator.llm.requests]
    assert seen == [0, 1, 2]


async def test_ten_subscribers_receive_the_same_events(orchestrator):
    orchestrator.llm.delay = 0.002
    debate = await orchestrator.create(config(n=2, rounds=2))
    subscribers = [asyncio.create_task(orchestrator.events(debate.debate_id)) for _ in range(10)]
    await asyncio.sleep(0.05)
    await orchestrator.start(debate.debate_id)
    results = await asyncio.gather(*subscribers)
    assert all(len(r) > 10 for r in results)
    assert all([e.SerializeToString() for e in r] == [e.SerializeToString() for e in results[0]] for r in results)


async def test_resume_after_sequence_sees_every_event_exactly_once(orchestrator):
    orchestrator.llm.delay = 0.003
    debate = await orchestrator.create(config(n=2, rounds=3))
    await orchestrator.start(debate.debate_id)
    seen = await orchestrator.events(debate.debate_id, limit=7)
    while True:
        more = await orchestrator.events(debate.debate_id, after=seen[-1].sequence, limit=9)
        seen += more
        if more[-1].WhichOneof("payload") in ("debate_completed", "debate_failed"):
            break
    seen = [e for e in seen if e.WhichOneof("payload") != "heartbeat"]
    assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
    replay = await orchestrator.events(debate.debate_id)
    assert [e.SerializeToString() for e in replay] == [e.SerializeToString() for e in seen]


async def test_cancel_stops_generation_and_keeps_what_was_spent(orchestrator):
    orchestrator.llm.delay = 0.02
    orchestrator.llm.chunks = 500
    debate = await orchestrator.create(config(n=2, rounds=3))
    await orchestrator.start(debate.debate_id)
    await asyncio.sleep(0.3)
    reply = await orchestrator.stub.CancelDebate(pb.CancelDebateRequest(debate_id=debate.debate_id, reason="bored"))
    assert reply.debate.state == S.DEBATE_STATE_CANCELLED
    events = await orchestrator.events(debate.debate_id)
    last = events[-1]
    assert last.debate_failed.state == S.DEBATE_STATE_CANCELLED and last.debate_failed.reason == "CANCELLED"
    cut = [r for r in orchestrator.accounting.records.values() if r.usage.estimated]
    assert len(cut) == 2 and all(r.usage.completion_tokens > 0 for r in cut)
    assert float(last.debate_failed.cost.total.amount) > 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orchestrator.stub.CancelDebate(pb.CancelDebateRequest(debate_id=debate.debate_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("orchestrator", [{"max_running_debates": 1, "max_queued_debates": 2}], indirect=True)
async def test_running_limit_then_bounded_queue_then_resource_exhausted(orchestrator):
    orchestrator.llm.delay = 0.01
    ids = [(await orchestrator.create(config(rounds=1))).debate_id for _ in range(4)]
    states = [(await orchestrator.start(i)).state for i in ids[:3]]
    assert states == [S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_QUEUED, S.DEBATE_STATE_QUEUED]
    status = await orchestrator.stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=ids[2]))
    assert status.debate.queue_position == 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orchestrator.start(ids[3])
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for debate_id in ids[:3]:
        events = await orchestrator.events(debate_id)
        assert events[-1].WhichOneof("payload") == "debate_completed"


async def test_refused_reservation_ends_the_debate_budget_exceeded(orchestrator):
    cfg = config(n=2, rounds=5, budget=c.Money(currency_code="USD", amount="0.002"))
    debate, events = await orchestrator.run(cfg)
    assert debate.state == S.DEBATE_STATE_BUDGET_EXCEEDED
    assert events[-1].debate_failed.reason == "BUDGET_EXCEEDED"
    assert "spent" in events[-1].debate_failed.message
    spent = sum(float(r.cost.amount) for r in orchestrator.accounting.records.values())
    assert float(debate.cost.total.amount) == pytest.approx(spent) and spent <= 0.002


async def test_list_is_paged_newest_first_and_filters_by_state(orchestrator):
    ids = [(await orchestrator.create(config())).debate_id for _ in range(5)]
    pages, token = [], ""
    while True:
        reply = await orchestrator.stub.ListDebates(pb.ListDebatesRequest(page_size=2, page_token=token))
        pages.append([d.debate_id for d in reply.debates])
        token = reply.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == ids[::-1]
    await orchestrator.stub.CancelDebate(pb.CancelDebateRequest(debate_id=ids[0]))
    cancelled = await orchestrator.stub.ListDebates(pb.ListDebatesRequest(state=S.DEBATE_STATE_CANCELLED))
    assert [d.debate_id for d in cancelled.debates] == [ids[0]]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orchestrator.stub.ListDebates(pb.ListDebatesRequest(page_token="garbage!"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_debate_is_not_found_everywhere(orchestrator):
    stub = orchestrator.stub
    for call in (
        stub.GetDebate(pb.GetDebateRequest(debate_id="nope")),
        stub.StartDebate(pb.StartDebateRequest(debate_id="nope")),
        stub.CancelDebate(pb.CancelDebateRequest(debate_id="nope")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orchestrator.events("nope")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_failed_model_call_is_retried_under_a_new_attempt(orchestrator):
    from services.common.llm.base import ProviderError

    debate = await orchestrator.create(config(n=2, rounds=1))
    key = f"debates/{debate.debate_id}/rounds/1/turns/debater1/attempts/1"
    orchestrator.llm.fail = {key: ProviderError("boom", retryable=True)}
    await orchestrator.start(debate.debate_id)
    events = await orchestrator.events(debate.debate_id)
    failed = [e.turn_failed for e in events if e.WhichOneof("payload") == "turn_failed"]
    assert [(f.participant, f.attempt, f.reason, f.will_retry) for f in failed] == [
        ("debater1", 1, "PROVIDER_ERROR", True)
    ]
    final = (await orchestrator.stub.GetDebate(pb.GetDebateRequest(debate_id=debate.debate_id))).debate
    assert final.state == S.DEBATE_STATE_COMPLETED
    assert {t.participant: t.attempt for t in final.rounds[0].turns} == {"debater0": 1, "debater1": 2}
    # The void attempt streamed two chunks before failing: the provider bills them, so they are
    # recorded under the attempt's key as an estimate (the prompt plus the text counted by us).
    void = orchestrator.accounting.records[key]
    assert void.usage.estimated and void.usage.completion_tokens > 0 and void.attempt == 1


@pytest.mark.parametrize("orchestrator", [{"judge_attempts": 1}], indirect=True)
async def test_a_judge_that_fails_ends_the_debate_failed_with_its_reason(orchestrator):
    from services.common.errors import Unavailable

    async def broken(request):
        raise Unavailable("judge down", reason="JUDGE_UNAVAILABLE")

    orchestrator.judge.evaluate_round = broken
    debate, events = await orchestrator.run(config(n=2, rounds=3))
    assert debate.state == S.DEBATE_STATE_FAILED
    assert events[-1].debate_failed.reason == "JUDGE_UNAVAILABLE"
    assert "JUDGE_UNAVAILABLE" in debate.end_reason


async def test_an_unavailable_judge_is_asked_again(orchestrator):
    from services.common.errors import Unavailable

    evaluate = orchestrator.judge.evaluate_round
    failures = [Unavailable("restarting", reason="JUDGE_UNAVAILABLE")]

    async def flaky(request):
        if failures:
            raise failures.pop()
        return await evaluate(request)

    orchestrator.judge.evaluate_round = flaky
    debate, _ = await orchestrator.run(config(n=2, rounds=1))
    assert debate.state == S.DEBATE_STATE_COMPLETED and not failures


@pytest.mark.parametrize("orchestrator", [{"api_keys": "key-alice-123=alice,key-bob-4567=bob"}], indirect=True)
async def test_another_tenant_can_neither_see_stream_nor_cancel_a_debate(orchestrator):
    alice = (("authorization", "Bearer key-alice-123"),)
    bob = (("authorization", "Bearer key-bob-4567"),)
    stub = orchestrator.stub
    debate = (await stub.CreateDebate(pb.CreateDebateRequest(config=config()), metadata=alice)).debate
    assert (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate.debate_id), metadata=alice)).debate.debate_id
    for call in (
        stub.GetDebate(pb.GetDebateRequest(debate_id=debate.debate_id), metadata=bob),
        stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate.debate_id), metadata=bob),
        stub.StartDebate(pb.StartDebateRequest(debate_id=debate.debate_id), metadata=bob),
        stub.CancelDebate(pb.CancelDebateRequest(debate_id=debate.debate_id), metadata=bob),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate.debate_id), metadata=bob):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert list((await stub.ListDebates(pb.ListDebatesRequest(), metadata=bob)).debates) == []
    assert len((await stub.ListDebates(pb.ListDebatesRequest(), metadata=alice)).debates) == 1


async def test_restart_records_a_stored_turn_without_generating_it_again(orchestrator_backend):
    """The orchestrator stops after a turn was stored but before its usage was recorded; the next
    process records it under the same key and never asks the model for that turn again."""
    accounting, judge = MemoryAccounting(), MemoryJudge()
    record = accounting.record_usage
    stuck = asyncio.Event()

    async def hang_on_round_two(request):
        if "/rounds/2/turns/debater0/" in request.request_id:
            stuck.set()
            await asyncio.Event().wait()  # accounting never answers this one
        return await record(request)

    accounting.record_usage = hang_on_round_two
    settings = OrchestratorSettings(port=0, **orchestrator_backend.settings())
    first = await build_service(settings, llm=ScriptedLLM(chunks=8), judge=judge, accounting=accounting)
    await first.start()
    row = first.engine.create("default", config(n=2, rounds=3), "")
    first.engine.start("default", row.debate_id)
    await asyncio.wait_for(stuck.wait(), 10)
    await first.stop(0)  # the debate stays RUNNING in the store

    accounting.record_usage = record
    llm = ScriptedLLM(chunks=8)
    second = await build_service(settings, llm=llm, judge=judge, accounting=accounting)
    await second.start()
    try:
        for _ in range(400):
            row = second.engine.store.get_debate(row.debate_id)
            if row.state == S.DEBATE_STATE_COMPLETED:
                break
            await asyncio.sleep(0.025)
        assert row.state == S.DEBATE_STATE_COMPLETED
        asked = {r.request_id.split("/attempts/")[0].split("/rounds/")[1] for r in llm.requests}
        assert "2/turns/debater0" not in asked  # stored before the stop: not generated again
        assert f"debates/{row.debate_id}/rounds/2/turns/debater0/attempts/1" in accounting.records
        turns = [r for r in accounting.records.values() if r.role == c.ROLE_DEBATER]
        assert len(turns) == 6 and accounting.duplicates == 0
        events = [e for _, e in second.engine.store.read_events(row.debate_id, 0, 10**9, 10**6)]
        assert len(events) == row.last_sequence
    finally:
        await second.stop(0)


async def test_resuming_past_the_end_of_the_log_is_out_of_range(orchestrator):
    debate, events = await orchestrator.run(config(n=2, rounds=1))
    assert await orchestrator.events(debate.debate_id, after=len(events)) == []  # nothing missed, ended
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orchestrator.events(debate.debate_id, after=len(events) + 1)
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    info, _ = error_details(caught.value)
    assert info.metadata["last_sequence"] == str(len(events))


@pytest.mark.parametrize("orchestrator", [{"subscriber_max_lag": 16}], indirect=True)
async def test_a_stalled_subscriber_is_cut_off_with_where_to_resume_and_the_debate_goes_on(orchestrator):
    orchestrator.llm.delay, orchestrator.llm.chunks, orchestrator.llm.filler = 0.004, 150, "x" * 4000
    debate = await orchestrator.create(config(n=2, rounds=2))
    await orchestrator.start(debate.debate_id)
    # A small receive window, so the stall reaches the server instead of the client's buffers.
    channel = grpc.aio.insecure_channel(
        orchestrator.address, options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)]
    )
    stub = pbg.OrchestratorServiceStub(channel)
    call = stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate.debate_id))
    first = await call.read()
    await asyncio.sleep(2.0)  # stalls while gRPC's flow-control window fills and the log moves on
    received = [first.event]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                break
            received.append(response.event)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = error_details(caught.value)
    assert info.reason == "SUBSCRIBER_TOO_SLOW"
    assert info.metadata["last_sequence"] == str(received[-1].sequence)
    rest = await orchestrator.events(debate.debate_id, after=received[-1].sequence)  # resumes where it was cut
    assert [e.sequence for e in received + rest] == list(range(1, len(received) + len(rest) + 1))
    assert rest[-1].WhichOneof("payload") == "debate_completed"
    await channel.close()


async def test_a_bad_request_id_is_reported_with_the_config_problems(orchestrator):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orchestrator.create(config(n=1), request_id="r" * 200)
    _, violations = error_details(caught.value)
    assert [f for f, _ in violations] == ["request_id", "config.participants"]


@pytest.mark.parametrize("orchestrator", [{"max_streams_per_caller": 2}], indirect=True)
async def test_concurrent_streams_per_caller_are_bounded(orchestrator):
    debate = await orchestrator.create(config())
    calls = [
        orchestrator.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate.debate_id)) for _ in range(3)
    ]
    waits = [asyncio.ensure_future(call.read()) for call in calls[:2]]
    await asyncio.sleep(0.2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await calls[2].read()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_details(caught.value)[0].reason == "TOO_MANY_STREAMS"
    calls[0].cancel()
    await asyncio.sleep(0.2)
    again = orchestrator.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate.debate_id))
    await orchestrator.start(debate.debate_id)
    assert (await again.read()).event.sequence == 1  # a freed slot is usable again
    for call in (calls[1], again):
        call.cancel()
    for wait in waits:
        wait.cancel()


async def test_a_batched_stream_carries_the_same_events_as_one_event_a_message(orchestrator):
    debate = await orchestrator.create(config(n=3, rounds=2))
    live = orchestrator.stub.StreamDebateEvents(
        pb.StreamDebateEventsRequest(debate_id=debate.debate_id, batch_events=True)
    )
    await orchestrator.start(debate.debate_id)
    live_responses = [response async for response in live]
    assert all(not r.HasField("event") and len(r.events) >= 1 for r in live_responses)
    live_events = [event for r in live_responses for event in r.events]
    one_each = await orchestrator.events(debate.debate_id)
    assert live_events == one_each and kinds(one_each)[-1] == "debate_completed"
    replay = [
        r
        async for r in orchestrator.stub.StreamDebateEvents(
            pb.StreamDebateEventsRequest(debate_id=debate.debate_id, after_sequence=5, batch_events=True)
        )
    ]
    assert len(replay) == 1 and list(replay[0].events) == one_each[5:]  # the ended debate's rest, in one message


async def test_a_burst_of_thousands_of_watchers_all_get_their_stream(orchestrator):
    """gRPC's default cancels calls past 1,000 not yet taken up by the server (see SERVER_OPTIONS)."""
    debate = await orchestrator.create(config(n=2, rounds=1))
    await orchestrator.start(debate.debate_id)
    expected = await orchestrator.events(debate.debate_id)
    request = pb.StreamDebateEventsRequest(debate_id=debate.debate_id, batch_events=True)

    async def watch() -> int | str:
        try:
            return sum([len(r.events) async for r in orchestrator.stub.StreamDebateEvents(request, timeout=120)])
        except grpc.aio.AioRpcError as error:
            return error.code().name

    outcomes = await asyncio.gather(*(watch() for _ in range(3000)))
    assert outcomes == [len(expected)] * 3000
