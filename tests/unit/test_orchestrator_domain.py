"""Domain code of the orchestrator as plain Python: config validation, the sliding window, the
scheduler, the event hub (resume, slow subscribers, heartbeats) and tenant isolation. What
touches the store runs on SQLite and on PostgreSQL (the orchestrator_backend fixture)."""

from __future__ import annotations

import asyncio

import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from prometheus_client import CollectorRegistry, Histogram

from services.common.debate_rules import ModelRules
from services.common.errors import InvalidArgument, NotFound
from services.orchestrator.config import Limits, validate_config
from services.orchestrator.context import ContextBuilder, Transcript
from services.orchestrator.engine import Engine
from services.orchestrator.events import EventHub, SubscriberTooSlow
from services.orchestrator.scheduler import QUEUED, RUNNING, QueueFull, Scheduler
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.store import Store, decode_page_token, encode_page_token
from services.orchestrator.transport import FRAMING
from tests.support.orchestrator_fakes import MemoryAccounting, MemoryJudge, ScriptedLLM
from tests.support.orchestrator_stores import OrchestratorBackend

SETTINGS = OrchestratorSettings()


def cfg(**kwargs) -> c.DebateConfig:
    base = {
        "topic": "Remote work beats the office",
        "participants": [
            c.Participant(name="ann", model="sim/debater", persona="an engineer", stance="for"),
            c.Participant(name="bo", model="sim/debater", persona="a manager", stance="against"),
        ],
        "format": c.DebateFormat(round_limit=3),
    }
    base.update(kwargs)
    return c.DebateConfig(**base)


def validate(config: c.DebateConfig) -> c.DebateConfig:
    return validate_config(config, Limits(SETTINGS), ModelRules(SETTINGS.model_allowed))


# -- config ---------------------------------------------------------------------------------
def test_valid_config_is_normalised_and_cleaned():
    dirty = cfg(
        topic="Remote\u200b work \u202ebeats\u202c the office",
        participants=[
            c.Participant(name="ann", model="sim/debater", persona="an\u0007 engineer\u2066"),
            c.Participant(name="bo", model="sim/debater"),
        ],
    )
    out = validate(dirty)
    assert out.topic == "Remote work beats the office"
    assert out.participants[0].persona == "an engineer"
    assert out.format.turn_order == c.TURN_ORDER_SIMULTANEOUS
    assert out.context.window_size == SETTINGS.default_window_size
    assert out.context.max_tokens == SETTINGS.default_context_tokens
    assert out.max_tokens_per_turn == SETTINGS.default_max_tokens_per_turn
    assert list(out.judge.models) == ["sim/judge"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"participants": [c.Participant(name="solo", model="sim/debater")]}, "config.participants"),
        ({"format": c.DebateFormat(round_limit=0)}, "config.format.round_limit"),
        ({"context": c.ContextSettings(max_tokens=10)}, "config.context.max_tokens"),
        ({"budget": c.Money(currency_code="USD", amount="-1")}, "config.budget.amount"),
        ({"budget": c.Money(currency_code="EUR", amount="1")}, "config.budget.currency_code"),
        ({"judge": c.JudgeConfig(models=["evil/model"])}, "config.judge.models[0]"),
        # two debaters have only two distinct orderings: the judge would refuse a third
        ({"judge": c.JudgeConfig(orderings=3)}, "config.judge.orderings"),
        (
            {"judge": c.JudgeConfig(rubric=c.Rubric(criteria=[c.Criterion(name="x", weight=float("nan"))]))},
            "config.judge.rubric.criteria[0].weight",
        ),
    ],
)
def test_each_problem_is_one_field_violation(change, field):
    with pytest.raises(InvalidArgument) as caught:
        validate(cfg(**change))
    assert [v.field for v in caught.value.violations] == [field]


def test_nine_debaters_and_duplicate_names_are_refused():
    people = [c.Participant(name=f"p{i % 8}", model="sim/debater") for i in range(9)]
    with pytest.raises(InvalidArgument) as caught:
        validate(cfg(participants=people))
    fields = [v.field for v in caught.value.violations]
    assert fields == ["config.participants", "config.participants[8].name"]


# -- sliding window -------------------------------------------------------------------------
class CountingTokenizer:
    def __init__(self):
        self.calls = 0

    def __call__(self, model: str, text: str) -> int:
        self.calls += 1
        return len(text.split())


def history(rounds: int, words: int = 120) -> Transcript:
    transcript = Transcript()
    for r in range(1, rounds + 1):
        for name in ("ann", "bo"):
            transcript.add(r, name, " ".join(f"{name}{r}w{i}" for i in range(words)))
    return transcript


def test_window_stays_bounded_and_its_cost_does_not_grow_with_the_debate():
    long_debates = Limits(OrchestratorSettings(max_rounds=100))
    config = validate_config(
        cfg(format=c.DebateFormat(round_limit=60), context=c.ContextSettings(max_tokens=1000, window_size=5)),
        long_debates,
        ModelRules(SETTINGS.model_allowed),
    )
    sizes, counts = [], []
    for rounds in (5, 10, 20, 50):
        tokenizer = CountingTokenizer()
        builder = ContextBuilder(config, tokenizer)
        window = builder.build(config.participants[0], rounds + 1, history(rounds))
        sizes.append((len(window.messages), window.prompt_tokens))
        counts.append(tokenizer.calls)
        assert window.prompt_tokens <= 1000
        assert window.messages[0].role == "system" and "Persona: an engineer" in window.messages[0].content
    assert len(set(sizes)) == 1  # same window at 5 and at 50 rounds
    assert len(set(counts)) == 1  # same tokenizer work: only the window's turns are counted


def test_system_prompt_is_kept_even_when_nothing_else_fits():
    config = validate(cfg(context=c.ContextSettings(max_tokens=64, window_size=3)))
    window = ContextBuilder(config, CountingTokenizer()).build(config.participants[1], 3, history(2))
    assert [m.role for m in window.messages] == ["system", "user"]
    assert window.turns_dropped == 4 and "Stance: against" in window.messages[0].content


def test_window_shows_own_turns_as_assistant_and_others_named():
    config = validate(cfg())
    window = ContextBuilder(config, CountingTokenizer()).build(config.participants[0], 2, history(1, words=3))
    assert [m.role for m in window.messages] == ["system", "assistant", "user", "user"]
    assert window.messages[2].content.startswith("bo (against): ") and window.messages[2].name == "bo"


@pytest.mark.parametrize("model", ["sim/debater", "openai/gpt-4o", "openai/gpt-4"])
@pytest.mark.parametrize(
    "stance",
    ["for", "against.", "pro — très fort!\u200b", "12 of 13 ", "'quoted'", "line\u2028sep", "ends in :"],
)
def test_the_system_prompt_counted_in_parts_is_counted_exactly(model, stance):
    # The head and tail are counted once a debate and the round line each round: for tiktoken's
    # encodings the parts' sum must be the whole prompt's count, whatever the user's text ends in.
    from services.common.tokens import count_text_tokens, tokenizer_for
    from services.orchestrator.context import system_prompt_parts

    assert tokenizer_for(model).exact
    for round_number, rounds, max_tokens in ((1, 3, None), (12, 40, 300), (None, None, 80)):
        parts = system_prompt_parts(
            topic="Should cities ban cars?\u00a0Yes.",
            persona="a nurse, 40",
            stance=stance,
            round_number=round_number,
            rounds=rounds,
            instructions="You are Ann. Argue.",
            max_tokens=max_tokens,
        )
        assert sum(count_text_tokens(model, part) for part in parts) == count_text_tokens(model, "".join(parts))


def test_a_window_counts_each_debaters_fixed_prompt_once_and_the_round_line_each_round():
    from services.common.tokens import count_text_tokens
    from services.orchestrator.context import MESSAGE_OVERHEAD, round_instruction, system_prompt

    config = validate(cfg(format=c.DebateFormat(round_limit=5)))
    counted: list[str] = []

    def count(model: str, text: str) -> int:
        counted.append(text)
        return count_text_tokens(model, text)

    builder = ContextBuilder(config, count)
    for r in (1, 2, 3):
        for debater in config.participants:
            window = builder.build(debater, r, Transcript())
            whole = count_text_tokens(debater.model, system_prompt(config, debater, r))
            instruction = count_text_tokens(debater.model, round_instruction(r, 5))
            assert window.prompt_tokens == whole + instruction + 2 * MESSAGE_OVERHEAD
    debaters = len(config.participants)
    assert debaters >= 2 and len({p.model for p in config.participants}) == 1
    assert sum("Persona:" in text for text in counted) == debaters  # each head once for three rounds
    assert sum(text.startswith("Round: ") for text in counted) == 3  # each round's line once for all


# -- scheduler ------------------------------------------------------------------------------
def test_scheduler_runs_up_to_the_limit_then_queues_fifo_then_refuses():
    scheduler = Scheduler(running_limit=2, queue_limit=2)
    assert [scheduler.admit(x) for x in "abcd"] == [RUNNING, RUNNING, QUEUED, QUEUED]
    with pytest.raises(QueueFull):
        scheduler.admit("e")
    assert scheduler.admit("c") == QUEUED and scheduler.position("d") == 2
    assert scheduler.finish("a") == ["c"] and scheduler.position("d") == 1
    assert scheduler.finish("d") == [] and scheduler.finish("b") == []


# -- event hub ------------------------------------------------------------------------------
def delta(text: str) -> dict:
    return {"token_delta": pb.TokenDelta(round_number=1, participant="ann", text=text, attempt=1)}


async def read(gen, n: int) -> list[pb.DebateEvent]:
    out = []
    async for frame in gen:
        out.append(pb.StreamDebateEventsResponse.FromString(frame).event)
        if len(out) == n:
            break
    return out


def hub_with_300_events(backend: OrchestratorBackend) -> tuple[Store, EventHub]:
    """A debate log of 300 emitted, not yet flushed events: more than its memory tail of 64 holds."""
    store = backend.open()
    hub = EventHub(store, framing=FRAMING, tail_events=64)
    hub.open_log("d1", 0).active = True
    for i in range(300):
        hub.emit("d1", **delta(f"t{i} "))
    return store, hub


async def test_events_become_visible_only_once_stored_and_resume_reads_the_store(orchestrator_backend):
    store, hub = hub_with_300_events(orchestrator_backend)
    assert hub.get("d1").durable == 0  # nothing announced before the commit
    hub.flush()
    assert store.last_sequence("d1") == 300 and hub.get("d1").base > 1
    events = await read(hub.subscribe("d1", 10, terminal=False, last_sequence=300), 290)
    assert [e.sequence for e in events] == list(range(11, 301))
    assert events[0].token_delta.text == "t10 "


async def test_token_text_is_coalesced_per_tick(orchestrator_backend):
    from services.orchestrator.events import DeltaBuffer

    hub = EventHub(orchestrator_backend.open(), framing=FRAMING)
    buffer = DeltaBuffer("d1", 1, "ann", 1)
    for word in ("a ", "b ", "c "):
        hub.add_text(buffer, word)
    hub.flush()
    events = await read(hub.subscribe("d1", 0, terminal=False, last_sequence=0), 1)
    assert events[0].token_delta.text == "a b c " and hub.get("d1").durable == 1


async def _passes(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_quiet_hub_commits_a_chunk_at_the_end_of_the_loops_pass_not_at_a_tick(orchestrator_backend):
    from services.orchestrator.events import DeltaBuffer

    # The backstop tick is an hour away: only the commit the chunk schedules can carry it.
    hub = EventHub(orchestrator_backend.open(), framing=FRAMING, coalesce_s=3600)
    hub.start()
    try:
        hub.open_log("d1", 0).active = True
        buffer = DeltaBuffer("d1", 1, "ann", 1)
        for word in ("a ", "b "):  # in one pass: one commit carries both
            hub.add_text(buffer, word)
        assert hub.get("d1").durable == 0  # nothing is announced before its commit
        await _passes(2)
        assert hub.get("d1").durable == 1 and hub.flushes == 1
        hub.add_text(buffer, "c ")  # the next chunk, alone in its pass, goes out at once too
        await _passes(2)
        assert hub.get("d1").durable == 2 and hub.flushes == 2
        events = await read(hub.subscribe("d1", 0, terminal=False, last_sequence=0), 2)
        assert [e.token_delta.text for e in events] == ["a b ", "c "]
    finally:
        await hub.stop()


async def test_a_busy_hub_spaces_its_commits_by_the_coalescing_interval(orchestrator_backend):
    from services.orchestrator.events import FULL_LOAD, DeltaBuffer

    hub = EventHub(orchestrator_backend.open(), framing=FRAMING, coalesce_s=3600)
    hub.start()
    try:
        hub.open_log("d1", 0).active = True
        buffer = DeltaBuffer("d1", 1, "ann", 1)
        hub.flush()  # the last commit: just now
        hub.load = FULL_LOAD  # as the load sample would say of a busy process
        assert hub.commit_gap() == 3600
        for word in ("a ", "b ", "c "):
            hub.add_text(buffer, word)
            await _passes(3)
        assert hub.get("d1").durable == 0 and hub.flushes == 1  # waiting for the gap
        hub.load = FULL_LOAD / 4
        assert hub.commit_gap() == pytest.approx(900)  # proportional below full load
    finally:
        await hub.stop()  # commits what waits
    assert hub.get("d1") is None or hub.get("d1").durable == 1


async def test_a_token_delta_is_stamped_with_its_first_chunks_arrival(orchestrator_backend):
    import time

    from services.orchestrator.events import DeltaBuffer

    hub = EventHub(orchestrator_backend.open(), framing=FRAMING)
    buffer = DeltaBuffer("d1", 1, "ann", 1)
    before = time.time_ns()
    hub.add_text(buffer, "a ")
    await asyncio.sleep(0.05)
    hub.add_text(buffer, "b ")
    hub.flush()
    after_commit = time.time_ns()
    (event,) = await read(hub.subscribe("d1", 0, terminal=False, last_sequence=0), 1)
    stamped = event.time.ToNanoseconds()
    assert event.token_delta.text == "a b "
    assert before <= stamped <= before + 40_000_000 < after_commit  # the first chunk's time, not the commit's


async def test_slow_live_subscriber_is_cut_off_with_its_last_sequence_others_unaffected(orchestrator_backend):
    registry = CollectorRegistry()
    relay = Histogram("relay_seconds", "relay", registry=registry)
    hub = EventHub(orchestrator_backend.open(), framing=FRAMING, max_lag=20, tail_events=1000, relay_seconds=relay)
    hub.open_log("d1", 0).active = True
    slow = hub.subscribe("d1", 0, terminal=False, last_sequence=0)
    fast = hub.subscribe("d1", 0, terminal=False, last_sequence=0)
    slow_first = asyncio.ensure_future(slow.__anext__())
    fast_task = asyncio.ensure_future(read(fast, 100))
    await asyncio.sleep(0)
    hub.emit("d1", **delta("x"))
    hub.flush()
    await slow_first  # live now, then it stops reading while 99 more events arrive, 11 per tick
    for tick in range(9):
        for i in range(11):
            hub.emit("d1", **delta(f"{tick}.{i}"))
        hub.flush()
        for _ in range(3):
            await asyncio.sleep(0)
    assert len(await fast_task) == 100
    with pytest.raises(SubscriberTooSlow) as caught:
        await read(slow, 100)
    assert caught.value.metadata["last_sequence"] == "1" and caught.value.reason == "SUBSCRIBER_TOO_SLOW"
    # What the metrics read (orchestrator/metrics.py): one cut, every event appended, the fast one
    # still subscribed until it leaves.
    assert (hub.subscribers_cut, hub.events_appended, hub.subscriber_count) == (1, 100, 1)
    await fast.aclose()
    assert hub.subscriber_count == 0
    # A message counts once the transport has taken it and asks for the next: the slow one's
    # first, and the fast one's first 99 (nothing asked for more after its 100th).
    assert hub.messages_sent == 1 + 99
    relayed = registry.get_sample_value("relay_seconds_count")
    # Once per message sent after a wake: at most one per subscriber and commit (2 x 10), not one per event.
    assert relayed is not None and 2 <= relayed <= 20


async def test_idle_subscriber_gets_heartbeats_with_its_last_sequence(orchestrator_backend):
    hub = EventHub(orchestrator_backend.open(), framing=FRAMING, coalesce_s=0.005, heartbeat_s=0.05)
    hub.open_log("d1", 0).active = True
    hub.emit("d1", **delta("x"))
    hub.start()
    try:
        events = await asyncio.wait_for(read(hub.subscribe("d1", 0, terminal=False, last_sequence=0), 3), 5)
    finally:
        await hub.stop()
    assert [e.WhichOneof("payload") for e in events] == ["token_delta", "heartbeat", "heartbeat"]
    assert [e.sequence for e in events] == [1, 1, 1]


async def read_batches(gen, n: int) -> list[list[pb.DebateEvent]]:
    """Responses of a batch_events subscription, as lists of events, until n events were read."""
    out, total = [], 0
    async for frame in gen:
        response = pb.StreamDebateEventsResponse.FromString(frame)
        assert not response.HasField("event") and len(response.events) >= 1
        out.append(list(response.events))
        total += len(response.events)
        if total >= n:
            break
    return out


async def test_batched_subscription_carries_the_same_events_in_far_fewer_responses(orchestrator_backend):
    _, hub = hub_with_300_events(orchestrator_backend)  # the first ones only in the store, the last in the tail too
    hub.flush()
    single = await read(hub.subscribe("d1", 10, terminal=False, last_sequence=300), 290)
    batches = await read_batches(hub.subscribe("d1", 10, terminal=False, last_sequence=300, batch=True), 290)
    batched = [event for batch in batches for event in batch]
    assert batched == single and [e.sequence for e in batched] == list(range(11, 301))
    assert len(batches) <= 4  # store pages of 256, then the tail in one


async def test_a_batch_stops_growing_past_its_size_limit(orchestrator_backend):
    from services.orchestrator.debate_log import MAX_BATCH_BYTES

    hub = EventHub(orchestrator_backend.open(), framing=FRAMING, tail_events=1000)
    hub.open_log("d1", 0).active = True
    text = "x" * 4000
    count = 3 * MAX_BATCH_BYTES // len(text)
    for _ in range(count):
        hub.emit("d1", **delta(text))
    hub.flush()
    batches = await read_batches(hub.subscribe("d1", 0, terminal=False, last_sequence=count, batch=True), count)
    assert [e.sequence for batch in batches for e in batch] == list(range(1, count + 1))
    assert 3 <= len(batches) <= 4
    assert all(sum(e.ByteSize() for e in batch[:-1]) < MAX_BATCH_BYTES for batch in batches)


async def test_subscribers_woken_together_send_one_joined_batch(orchestrator_backend):
    hub = EventHub(orchestrator_backend.open(), framing=FRAMING)
    hub.open_log("d1", 0).active = True
    subscribers = [hub.subscribe("d1", 0, terminal=False, last_sequence=0, batch=True) for _ in range(3)]
    pending = [asyncio.ensure_future(gen.__anext__()) for gen in subscribers]
    await asyncio.sleep(0)
    for i in range(5):
        hub.emit("d1", **delta(f"w{i}"))
    hub.flush()
    frames = await asyncio.gather(*pending)
    assert frames[0] is frames[1] is frames[2]  # the same bytes object: joined once, not per subscriber
    assert [e.sequence for e in pb.StreamDebateEventsResponse.FromString(frames[0]).events] == [1, 2, 3, 4, 5]
    hub.emit("d1", **delta("next"))
    hub.flush()
    later = await asyncio.gather(*(gen.__anext__() for gen in subscribers))
    assert [e.sequence for e in pb.StreamDebateEventsResponse.FromString(later[0]).events] == [6]


async def test_batched_heartbeats_come_alone(orchestrator_backend):
    hub = EventHub(orchestrator_backend.open(), framing=FRAMING, coalesce_s=0.005, heartbeat_s=0.05)
    hub.open_log("d1", 0).active = True
    hub.emit("d1", **delta("x"))
    hub.start()
    try:
        batches = await asyncio.wait_for(
            read_batches(hub.subscribe("d1", 0, terminal=False, last_sequence=0, batch=True), 2), 5
        )
    finally:
        await hub.stop()
    assert [[e.WhichOneof("payload") for e in batch] for batch in batches] == [["token_delta"], ["heartbeat"]]
    assert batches[1][0].sequence == 1


def test_page_tokens_round_trip_and_refuse_garbage():
    assert decode_page_token(encode_page_token(123, "abc", 4)) == (123, "abc", 4)
    with pytest.raises((ValueError, TypeError)):
        decode_page_token("not-a-token")


# -- tenants -------------------------------------------------------------------------------
def test_another_tenant_sees_nothing(orchestrator_backend):
    store = orchestrator_backend.open()
    engine = Engine(
        store,
        EventHub(store, framing=FRAMING),
        Scheduler(2, 2),
        ScriptedLLM(),
        MemoryJudge(),
        MemoryAccounting(),
        SETTINGS,
        ModelRules(SETTINGS.model_allowed),
    )
    row = engine.create("tenant-a", cfg(), "req")
    assert engine.get_row("tenant-a", row.debate_id).debate_id == row.debate_id
    with pytest.raises(NotFound):
        engine.get_row("tenant-b", row.debate_id)
    assert engine.list_debates("tenant-b", 0, 10, "")[0] == []
    assert engine.create("tenant-b", cfg(), "req").debate_id != row.debate_id  # request ids are per tenant


async def test_subscribers_per_debate_are_bounded(orchestrator_backend):
    from services.common.errors import ResourceExhausted

    hub = EventHub(orchestrator_backend.open(), framing=FRAMING, max_subscribers=1)
    hub.open_log("d1", 0).active = True
    first = asyncio.ensure_future(hub.subscribe("d1", 0, terminal=False, last_sequence=0).__anext__())
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted) as caught:
        await hub.subscribe("d1", 0, terminal=False, last_sequence=0).__anext__()
    assert caught.value.reason == "TOO_MANY_SUBSCRIBERS"
    first.cancel()
