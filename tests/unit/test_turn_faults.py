"""Faults inside a turn, through the engine as the server builds it (no gRPC server started),
with the in-process stand-ins of orchestrator_fakes: a provider payload the engine cannot use
fails that turn alone, with a TurnFailed of a stable reason and its usage settled; reasoning
text is billed but never speech; every call the provider billed is a ledger row; and the event
hub keeps one debate's fault, or a failed store commit, from reaching any other debate. The
engine's cases run on SQLite and on PostgreSQL; the hub's failing-store cases use a SQLite store
made to fail (a real lost PostgreSQL connection is test_orchestrator_store's)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.llm.base import (
    Completion,
    CompletionRequest,
    LLMError,
    ProviderTimeout,
    ReasoningDelta,
    StreamStalled,
    TextDelta,
)
from services.common.money import usd
from services.common.usage import Usage
from services.orchestrator.events import DeltaBuffer, EventHub, StoreUnavailable, TextRejected
from services.orchestrator.run import S, turn_key
from services.orchestrator.server import OrchestratorService, build_service
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.store import DebateRow, SqliteStore, Store
from services.orchestrator.transport import FRAMING
from tests.support.orchestrator_fakes import EventScriptLLM, MemoryAccounting, MemoryJudge, speaker

BAD = "PROVIDER_BAD_RESPONSE"


def cfg(rounds: int = 2, **kwargs) -> c.DebateConfig:
    return c.DebateConfig(
        topic="Remote work beats the office",
        participants=[
            c.Participant(name="ann", model="sim/debater", persona="an engineer", stance="for"),
            c.Participant(name="bo", model="sim/debater", persona="a manager", stance="against"),
        ],
        format=c.DebateFormat(round_limit=rounds, turn_order=c.TURN_ORDER_SEQUENTIAL),
        budget=usd("5"),
        **kwargs,
    )


class Rig:
    """The orchestrator's engine as its server builds it (a real store and hub, ticking every
    5 ms; no gRPC server started), with a scripted LLM and the in-memory judge and accounting."""

    def __init__(self, service: OrchestratorService, llm: EventScriptLLM, accounting: MemoryAccounting):
        self.service, self.engine, self.llm, self.accounting = service, service.engine, llm, accounting
        self.store, self.hub = self.engine.store, self.engine.hub

    def start(self, tenant: str, config: c.DebateConfig) -> tuple[str, asyncio.Task[None]]:
        row = self.engine.create(tenant, config, "")
        self.engine.start(tenant, row.debate_id)
        task = self.engine.lifecycle.runs[row.debate_id].task
        assert task is not None
        return row.debate_id, task

    def row(self, debate_id: str) -> DebateRow:
        return self.store.existing_debate(debate_id)

    def events(self, debate_id: str) -> list[pb.DebateEvent]:
        self.hub.commit()
        rows = self.store.read_events(debate_id, 0, 10**9, 100_000)
        return [pb.DebateEvent.FromString(data) for _, data in rows]

    def failures(self, debate_id: str) -> list[pb.TurnFailed]:
        return [e.turn_failed for e in self.events(debate_id) if e.WhichOneof("payload") == "turn_failed"]

    def spoken(self, debate_id: str) -> str:
        """Every TokenDelta's text of the debate, joined."""
        return "".join(e.token_delta.text for e in self.events(debate_id) if e.WhichOneof("payload") == "token_delta")

    def held(self, debate_id: str) -> list[str]:
        """Reservations of the debate still held (neither committed by a record nor released)."""
        return [key for key, (owner, _) in self.accounting.reservations.items() if owner == debate_id]


@pytest.fixture
async def rig_factory(orchestrator_backend):
    """Rigs on SQLite and on PostgreSQL (orchestrator_backend): one rig a test."""
    rigs: list[Rig] = []

    async def make(llm: EventScriptLLM) -> Rig:
        assert not rigs, "one rig a test: they would share the test's PostgreSQL database"
        settings = OrchestratorSettings(port=0, coalesce_ms=5, **orchestrator_backend.settings())
        accounting = MemoryAccounting()
        service = await build_service(settings, llm=llm, judge=MemoryJudge(), accounting=accounting)
        rigs.append(Rig(service, llm, accounting))
        return rigs[-1]

    yield make
    for rig in rigs:
        await rig.engine.shutdown()
        await rig.hub.stop()
        rig.store.close()


def done(usage_tokens: int = 20) -> Completion:
    return Completion(model="sim/debater", usage=Usage(prompt_tokens=50, completion_tokens=usage_tokens))


# -- a payload the engine cannot use --------------------------------------------------------
# Each fault hits bo's turn of round 1 in the faulty debate. `billed`: the provider had sent
# something (the attempt is recorded as an estimate, else its reservation is released);
# `raised`: the stream raised an exception of no domain type (its traceback is logged at error
# level for operators).
FAULTS = {
    "text_as_a_list_of_blocks": ([TextDelta("fine "), TextDelta([{"type": "text", "text": " word"}])], True, False),
    "type_error_mid_stream": ([TextDelta("fine "), TypeError("'NoneType' object is not subscriptable")], True, True),
    "key_error_before_any_chunk": ([KeyError("choices")], False, True),
    "an_event_of_no_known_type": ([TextDelta("fine "), {"delta": {"content": "x"}}], True, False),
    "a_completion_without_usage": ([TextDelta("fine "), Completion(model="m", usage=None)], True, True),  # type: ignore[arg-type]
    "attribute_error_after_the_completion": ([TextDelta("fine "), done(), AttributeError("aclose")], True, True),
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
async def test_a_bad_payload_fails_its_turn_alone_with_a_typed_reason_and_settled_usage(rig_factory, fault, caplog):
    items, billed, raised = FAULTS[fault]
    faulty: set[str] = set()

    def script(request: CompletionRequest):
        if request.request_id.split("/")[1] in faulty and speaker(request) == "bo":
            return items
        return None

    rig = await rig_factory(EventScriptLLM(script, delay=0.001))
    faulty_id, faulty_task = rig.start("alice", cfg())
    faulty.add(faulty_id)
    healthy_id, healthy_task = rig.start("bob", cfg(rounds=3))
    await asyncio.gather(faulty_task, healthy_task)

    row = rig.row(faulty_id)
    assert row.state == S.DEBATE_STATE_FAILED
    assert row.end_reason.startswith(f"{BAD}: ") and "INTERNAL" not in row.end_reason
    failed = rig.failures(faulty_id)
    assert [(f.round_number, f.participant, f.attempt, f.reason, f.will_retry) for f in failed] == [
        (1, "bo", 1, BAD, False)  # a malformed payload is not retried
    ]
    key = turn_key(faulty_id, 1, "bo", 1)
    if billed:
        record = rig.accounting.records[key]
        assert record.usage.estimated and record.usage.prompt_tokens > 0
        assert key not in rig.accounting.released
    else:
        assert key not in rig.accounting.records and key in rig.accounting.released
    assert rig.held(faulty_id) == []  # every reservation settled
    logged = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info and key in r.getMessage()]
    assert bool(logged) == raised

    assert rig.row(healthy_id).state == S.DEBATE_STATE_COMPLETED
    assert rig.failures(healthy_id) == []
    # other tenants keep working afterwards
    later_id, later_task = rig.start("carol", cfg(rounds=1))
    await later_task
    assert rig.row(later_id).state == S.DEBATE_STATE_COMPLETED


async def test_a_lone_surrogate_in_the_text_is_replaced_and_the_debate_goes_on(rig_factory):
    def script(request: CompletionRequest):
        if speaker(request) == "ann":
            return [TextDelta("smile \ud83d"), TextDelta(" end "), done()]
        return None

    rig = await rig_factory(EventScriptLLM(script))
    debate_id, task = rig.start("alice", cfg(rounds=1))
    await task
    assert rig.row(debate_id).state == S.DEBATE_STATE_COMPLETED
    turns = {t.participant: t.text for t, _ in rig.store.turns(debate_id)}
    assert turns["ann"] == "smile \ufffd end "
    assert "smile \ufffd end " in rig.spoken(debate_id)


# -- reasoning ------------------------------------------------------------------------------
SECRET = "SECRET-REASONING"


async def test_reasoning_is_never_speech_nor_shown_to_the_next_debater(rig_factory):
    def script(request: CompletionRequest):
        if speaker(request) == "ann":
            thinking = [ReasoningDelta(f"{SECRET} step {i}. ") for i in range(30)]
            return [
                *thinking,
                TextDelta("Remote work "),
                ReasoningDelta(f"{SECRET} aside. "),
                TextDelta("wins. "),
                done(),
            ]
        return None

    rig = await rig_factory(EventScriptLLM(script))
    debate_id, task = rig.start("alice", cfg(rounds=2))
    await task
    assert rig.row(debate_id).state == S.DEBATE_STATE_COMPLETED
    turns = {(t.round_number, t.participant): t.text for t, _ in rig.store.turns(debate_id)}
    assert turns[(1, "ann")] == turns[(2, "ann")] == "Remote work wins. "
    assert SECRET not in rig.spoken(debate_id) and "Remote work wins. " in rig.spoken(debate_id)
    seen = [m.content for r in rig.llm.requests for m in r.messages]
    assert any("Remote work wins." in text for text in seen)  # bo and round 2 saw ann's speech...
    assert not any(SECRET in text for text in seen)  # ...and never her reasoning


async def test_a_call_cut_during_its_reasoning_is_recorded_with_the_reasoning_counted(rig_factory):
    def script(request: CompletionRequest):
        if speaker(request) == "ann":
            thinking = [ReasoningDelta(f"{SECRET} step {i}. ") for i in range(20)]
            return [*thinking, StreamStalled("stream stalled", billed=True)]
        return None

    rig = await rig_factory(EventScriptLLM(script))
    debate_id, task = rig.start("alice", cfg(rounds=1))
    await task
    assert rig.row(debate_id).end_reason.startswith("PROVIDER_STALLED")
    usage = rig.accounting.records[turn_key(debate_id, 1, "ann", 1)].usage
    assert usage.estimated and usage.prompt_tokens > 0
    assert usage.reasoning_tokens > 20 and usage.completion_tokens == usage.reasoning_tokens  # no answer text
    assert rig.spoken(debate_id) == "" and rig.held(debate_id) == []


# -- billed failures ------------------------------------------------------------------------
def timeout_before_text(billed: bool) -> LLMError:
    return ProviderTimeout("no first token within 3s", model="sim/debater", retryable=True, billed=billed)


async def test_every_billed_attempt_is_a_ledger_row_and_its_reservation_committed(rig_factory):
    def script(request: CompletionRequest):
        if speaker(request) == "ann":
            return [timeout_before_text(billed=True)]
        return None

    rig = await rig_factory(EventScriptLLM(script))
    debate_id, task = rig.start("alice", cfg(rounds=1))
    await task
    assert rig.row(debate_id).end_reason.startswith("PROVIDER_TIMEOUT")
    assert [(f.attempt, f.will_retry) for f in rig.failures(debate_id)] == [(1, True), (2, True), (3, False)]
    keys = [turn_key(debate_id, 1, "ann", a) for a in (1, 2, 3)]
    rows = [rig.accounting.records[key] for key in keys]
    assert all(r.usage.estimated and r.usage.prompt_tokens > 0 and r.usage.completion_tokens == 0 for r in rows)
    assert not set(keys) & set(rig.accounting.released) and rig.held(debate_id) == []
    assert rig.row(debate_id).cost_amount != "0"


async def test_billed_attempts_before_a_success_are_all_recorded(rig_factory):
    def script(request: CompletionRequest):
        if speaker(request) == "ann" and not request.request_id.endswith("/attempts/3"):
            return [timeout_before_text(billed=True)]
        return None

    rig = await rig_factory(EventScriptLLM(script))
    debate_id, task = rig.start("alice", cfg(rounds=1))
    await task
    assert rig.row(debate_id).state == S.DEBATE_STATE_COMPLETED
    records = rig.accounting.records
    assert [records[turn_key(debate_id, 1, "ann", a)].usage.estimated for a in (1, 2, 3)] == [True, True, False]
    assert rig.accounting.released == []


async def test_an_unbilled_failure_before_text_only_releases_its_reservation(rig_factory):
    def script(request: CompletionRequest):
        if speaker(request) == "ann" and request.request_id.endswith("/attempts/1"):
            return [timeout_before_text(billed=False)]
        return None

    rig = await rig_factory(EventScriptLLM(script))
    debate_id, task = rig.start("alice", cfg(rounds=1))
    await task
    assert rig.row(debate_id).state == S.DEBATE_STATE_COMPLETED
    key = turn_key(debate_id, 1, "ann", 1)
    assert key not in rig.accounting.records and rig.accounting.released == [key]


# -- the event hub --------------------------------------------------------------------------
def delta(text: str, participant: str = "ann") -> dict:
    return {"token_delta": pb.TokenDelta(round_number=1, participant=participant, text=text, attempt=1)}


def stored(store: Store, debate_id: str) -> list[pb.DebateEvent]:
    return [pb.DebateEvent.FromString(data) for _, data in store.read_events(debate_id, 0, 10**9, 10_000)]


async def test_the_hub_refuses_text_that_is_not_a_string_and_stays_usable(tmp_path):
    hub = EventHub(SqliteStore(str(tmp_path / "o.sqlite3")), framing=FRAMING)
    buffer = DeltaBuffer("d1", 1, "ann", 1)
    hub.add_text(buffer, "a ")
    for bad in ([{"type": "text", "text": " word"}], None, b"bytes"):
        with pytest.raises(TextRejected):
            hub.add_text(buffer, bad)  # type: ignore[arg-type]
    hub.add_text(buffer, "b ")
    hub.commit()
    assert [e.token_delta.text for e in stored(hub.store, "d1")] == ["a b "]


async def test_text_that_cannot_become_an_event_fails_its_own_buffer_only(tmp_path, caplog):
    store = SqliteStore(str(tmp_path / "o.sqlite3"))
    hub = EventHub(store, framing=FRAMING)
    bad, good = DeltaBuffer("d1", 1, "ann", 1), DeltaBuffer("d2", 1, "bo", 1)
    hub.emit("d1", round_started=pb.RoundStarted(round_number=1))
    hub.add_text(bad, "ok \ud800")  # a str, but not UTF-8: it cannot be serialised
    hub.add_text(good, "fine ")
    hub.emit("d2", round_started=pb.RoundStarted(round_number=1))
    loop = asyncio.get_running_loop()
    waiter = loop.create_task(hub.committed())  # another debate's turn waits for this commit
    await asyncio.sleep(0)
    await asyncio.wait_for(waiter, 5)  # served, not failed
    assert bad.failed and "UnicodeEncodeError" in bad.failed and bad.parts == []
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)
    with pytest.raises(TextRejected):
        hub.add_text(bad, "more")
    hub.flush_text(bad)  # never raises
    assert [e.WhichOneof("payload") for e in stored(store, "d1")] == ["round_started"]
    assert [e.token_delta.text or e.WhichOneof("payload") for e in stored(store, "d2")] == ["round_started", "fine "]
    assert hub.get("d1").durable == 1 and hub.get("d2").durable == 2


class FlakyStore(SqliteStore):
    """Fails `failures` times in `where` ("add_events": after writing its rows; "commit": before
    committing), with the errors SQLite gives for a full disk or a busy database."""

    def __init__(self, path: str, where: str, failures: int = 1):
        super().__init__(path)
        self.where, self.failures = where, failures

    def add_events(self, rows):
        super().add_events(rows)
        if self.where == "add_events" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")

    def commit(self):
        if self.where == "commit" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        super().commit()


@pytest.mark.parametrize("where", ["add_events", "commit"])
async def test_a_failed_commit_keeps_every_pending_event_for_the_next_one(tmp_path, where):
    store = FlakyStore(str(tmp_path / "o.sqlite3"), where)
    hub = EventHub(store, framing=FRAMING)
    readers = {}
    for debate_id in ("d1", "d2"):
        hub.open_log(debate_id, 0).active = True
        readers[debate_id] = hub.subscribe(debate_id, 0, terminal=False, last_sequence=0)
    buffer = DeltaBuffer("d1", 1, "ann", 1)
    for i in range(3):
        hub.emit("d1", **delta(f"a{i} "))
        hub.emit("d2", **delta(f"b{i} ", "bo"))
    hub.add_text(buffer, "coalesced ")
    with pytest.raises(StoreUnavailable):
        hub.commit()
    assert hub.get("d1").durable == hub.get("d2").durable == 0  # nothing announced
    hub.emit("d2", **delta("b3 ", "bo"))
    hub.commit()
    texts = {d: [e.token_delta.text for e in stored(store, d)] for d in ("d1", "d2")}
    assert texts == {"d1": ["a0 ", "a1 ", "a2 ", "coalesced "], "d2": ["b0 ", "b1 ", "b2 ", "b3 "]}
    for debate_id, reader in readers.items():
        events = []
        async for frame in reader:
            events.append(pb.StreamDebateEventsResponse.FromString(frame).event)
            if len(events) == 4:
                break
        assert [e.sequence for e in events] == [1, 2, 3, 4]  # gap-free, each once
        assert [e.token_delta.text for e in events] == texts[debate_id]
    hub.emit("d1", **delta("after "))
    hub.commit()
    assert [e.sequence for e in stored(store, "d1")] == [1, 2, 3, 4, 5]


async def test_a_turn_waiting_on_a_failed_group_commit_is_served_by_the_retry(tmp_path):
    store = FlakyStore(str(tmp_path / "o.sqlite3"), "commit", failures=2)
    hub = EventHub(store, framing=FRAMING, coalesce_s=0.005)
    hub.emit("d1", **delta("x"))
    hub.start()
    try:
        await asyncio.wait_for(hub.committed(), 5)
    finally:
        await hub.stop()
    assert store.failures == 0 and [e.token_delta.text for e in stored(store, "d1")] == ["x"]


async def test_waiters_get_the_error_once_the_store_keeps_failing(tmp_path):
    store = FlakyStore(str(tmp_path / "o.sqlite3"), "commit", failures=10**6)
    hub = EventHub(store, framing=FRAMING, coalesce_s=0.005, commit_retries=3)
    hub.emit("d1", **delta("x"))
    hub.start()
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await asyncio.wait_for(hub.committed(), 5)
    finally:
        store.failures = 0
        await hub.stop()
    assert caught.value.reason == "STORE_UNAVAILABLE"


async def test_debates_go_on_through_failed_commits_and_lose_or_double_no_event(rig_factory):
    rig = await rig_factory(EventScriptLLM(lambda request: None, delay=0.001))
    ids = [rig.start(tenant, cfg(rounds=2))[0] for tenant in ("alice", "bob")]
    tasks = [rig.engine.lifecycle.runs[debate_id].task for debate_id in ids]
    real_commit, failures, background = rig.store.commit, [], []

    def flaky_commit() -> None:
        # fails the commits of the ticker and of the group commits that turns wait on
        if background and len(failures) < 4:
            failures.append(1)
            raise sqlite3.OperationalError("database is locked")
        real_commit()

    def in_background(step):
        def run() -> None:
            background.append(1)
            try:
                step()
            finally:
                background.pop()

        return run

    rig.store.commit = flaky_commit  # type: ignore[method-assign]
    rig.hub.flush = in_background(rig.hub.flush)  # type: ignore[method-assign]
    rig.hub._group_commit = in_background(rig.hub._group_commit)  # type: ignore[method-assign]  # noqa: SLF001
    await asyncio.gather(*tasks)
    rig.store.commit = real_commit  # type: ignore[method-assign]
    assert len(failures) == 4
    for debate_id in ids:
        assert rig.row(debate_id).state == S.DEBATE_STATE_COMPLETED
        events = rig.events(debate_id)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        completed = [
            (e.turn_completed.turn.round_number, e.turn_completed.turn.participant)
            for e in events
            if e.turn_completed.turn.participant
        ]
        assert sorted(completed) == [(r, p) for r in (1, 2) for p in ("ann", "bo")]
        assert [e.WhichOneof("payload") for e in events].count("debate_completed") == 1
        streamed = await read_all(rig.hub, debate_id, len(events))
        assert [e.sequence for e in streamed] == [e.sequence for e in events]


async def read_all(hub: EventHub, debate_id: str, n: int) -> list[pb.DebateEvent]:
    out = []
    async for frame in hub.subscribe(debate_id, 0, terminal=True, last_sequence=n):
        out.append(pb.StreamDebateEventsResponse.FromString(frame).event)
    return out
