"""A human seat (issue 19 part 3) over the real suite (accounting, judge and orchestrator as
processes, the simulated models made instant), on both stores: a person plays a participant
whose model is `human` through SubmitTurn; each timeout policy follows its rule; another tenant
gets NOT_FOUND; bad submits change nothing."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.tokens import count_text_tokens
from services.orchestrator.run import turn_key
from tests.support.human_seat import P, TenantClient, failure, human_config, human_suite, of_kind  # noqa: F401

S = pb.DebateState
CODE = grpc.StatusCode
ANN_1 = "Cars crowd the centre.\nBut a ban hurts those who cannot walk or cycle; charge for parking instead."
ANN_2 = "Milo ignores the night-shift workers: buses do not run when they need them."


@pytest.fixture
async def suite(human_suite):  # noqa: F811 (the fixture)
    address = human_suite.address("orchestrator")
    alice, bob = TenantClient(address, "alice"), TenantClient(address, "bob")
    yield human_suite, alice, bob
    await alice.close()
    await bob.close()


async def test_a_person_plays_a_seat_through_submit_turn(suite):
    suite, alice, bob = suite
    debate_id = await alice.create_and_start(human_config(rounds=2))
    awaited = of_kind(await alice.until(debate_id, "human_turn_awaited"), "human_turn_awaited")[0]
    assert (awaited.round_number, awaited.participant) == (1, "Ann")
    debate, status = await alice.get(debate_id), await alice.status(debate_id)
    assert debate.awaiting_human == awaited and status.awaiting_human == awaited
    assert debate.config.human.turn_timeout_seconds == 60

    # another tenant: the debate does not exist for it
    for call in (bob.submit(debate_id, "Ann", 1, ANN_1, "b-1"), bob.get(debate_id)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == CODE.NOT_FOUND

    # bad submits: the right status and details, and nothing changes
    cases = [
        (("Milo", 1, "I speak for Milo."), (CODE.FAILED_PRECONDITION, "NOT_A_HUMAN_SEAT", [])),
        (("Ann", 2, "Too early."), (CODE.FAILED_PRECONDITION, "HUMAN_TURN_NOT_AWAITED", [])),
        (("Zed", 1, "Who?"), (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["participant"])),
        (("Ann", 3, "Round 3?"), (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["round_number"])),
        (("Ann", 1, "  \n "), (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["text"])),
        (("Ann", 1, "word " * 200), (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["text"])),
        (("", 0, ""), (CODE.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["participant", "round_number", "text"])),
    ]
    for (participant, round_number, text), (code, reason, fields) in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await alice.submit(debate_id, participant, round_number, text, "bad")
        got_code, got_reason, violations = failure(refused.value)
        assert (got_code, got_reason, [f for f, _ in violations]) == (code, reason, fields), violations
        if text.startswith("word"):
            assert "201 tokens; a turn is at most max_tokens_per_turn = 96" in violations[0][1]
    assert (await alice.get(debate_id)).awaiting_human == awaited

    # the turn, once: a retry with its request_id acts once, another request_id is refused
    first = await alice.submit(debate_id, "Ann", 1, ANN_1, "ann-r1")
    again = await alice.submit(debate_id, "Ann", 1, ANN_1, "ann-r1")
    assert (first.duplicate, again.duplicate) == (False, True)
    assert first.completion_tokens == again.completion_tokens == count_text_tokens("human", ANN_1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.submit(debate_id, "Ann", 1, "a second try", "ann-r1-other")
    assert failure(refused.value)[:2] == (CODE.FAILED_PRECONDITION, "HUMAN_TURN_ALREADY_SUBMITTED")

    await alice.until(debate_id, "human_turn_awaited", count=2)
    await alice.submit(debate_id, "Ann", 2, ANN_2, "ann-r2")
    events = await alice.events(debate_id)
    assert of_kind(events, "debate_completed")

    # streamed like a model's turn: TurnStarted, the text as TokenDelta(s), TurnCompleted
    for r, text in ((1, ANN_1), (2, ANN_2)):
        kinds = [
            e.WhichOneof("payload")
            for e in events
            if getattr(getattr(e, e.WhichOneof("payload")), "participant", "") == "Ann"
            and getattr(getattr(e, e.WhichOneof("payload")), "round_number", 0) == r
        ]
        assert kinds[0] == "human_turn_awaited" and kinds[1] == "turn_started" and "token_delta" in kinds
        started = [t for t in of_kind(events, "turn_started") if t.participant == "Ann" and t.round_number == r]
        assert [t.model for t in started] == ["human"]
        deltas = [d.text for d in of_kind(events, "token_delta") if d.participant == "Ann" and d.round_number == r]
        assert "".join(deltas) == text
        (done,) = [
            t.turn
            for t in of_kind(events, "turn_completed")
            if t.turn.participant == "Ann" and t.turn.round_number == r
        ]
        tokens = count_text_tokens("human", text)
        assert (done.text, done.model, done.usage.completion_tokens, done.usage.prompt_tokens) == (
            text,
            "human",
            tokens,
            0,
        )
        assert done.cost.amount in ("0", "") and not done.human.skipped
        assert done.human.request_id == f"ann-r{r}"

    # counted at cost 0: the ledger has the seat's rows, and the cost table its line at 0
    debate = await alice.get(debate_id)
    assert debate.state == S.DEBATE_STATE_COMPLETED and not debate.HasField("awaiting_human")
    (ann,) = [line for line in debate.cost.by_participant if line.key == "Ann"]
    assert ann.calls == 2 and float(ann.cost.amount or "0") == 0
    assert ann.usage.completion_tokens == count_text_tokens("human", ANN_1) + count_text_tokens("human", ANN_2)
    (model_line,) = [line for line in debate.cost.by_model if line.key == "human"]
    assert model_line.price_source.startswith("project-prices-")
    keys = {row[0] for row in suite.query("usage", "SELECT request_id FROM usage")}
    assert {turn_key(debate_id, 1, "Ann", 1), turn_key(debate_id, 2, "Ann", 1)} <= keys
    assert [r.turns[0].text for r in debate.rounds] == [ANN_1, ANN_2]
    assert debate.verdict.winner in ("Ann", "Milo") or debate.verdict.tie

    # after the end: a retry still answers once; a new submit is refused
    assert (await alice.submit(debate_id, "Ann", 2, ANN_2, "ann-r2")).duplicate
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.submit(debate_id, "Ann", 1, "late", "")
    assert refused.value.code() == CODE.FAILED_PRECONDITION


@pytest.mark.parametrize(
    "policy", [P.HUMAN_TIMEOUT_POLICY_SKIP_TURN, P.HUMAN_TIMEOUT_POLICY_FORFEIT, P.HUMAN_TIMEOUT_POLICY_END_DEBATE]
)
async def test_a_timeout_follows_its_policy(suite, policy):
    suite, alice, _ = suite
    debate_id = await alice.create_and_start(human_config(rounds=3, timeout_s=1, policy=policy))
    events = await asyncio.wait_for(alice.events(debate_id), 60)
    debate = await alice.get(debate_id)
    timed_out = of_kind(events, "human_turn_timed_out")
    awaited = of_kind(events, "human_turn_awaited")
    assert all(t.policy == policy and t.participant == "Ann" for t in timed_out)
    for wait in awaited:  # each deadline is its wait's start plus the timeout
        assert wait.deadline.ToNanoseconds() > 0
    ann_turns = [t for r in debate.rounds for t in r.turns if t.participant == "Ann"]
    milo_turns = [t for r in debate.rounds for t in r.turns if t.participant == "Milo"]
    if policy == P.HUMAN_TIMEOUT_POLICY_SKIP_TURN:
        # every turn awaited, timed out and skipped; the debate goes on to its verdict
        assert [w.round_number for w in awaited] == [t.round_number for t in timed_out] == [1, 2, 3]
        assert [(t.human.skipped, t.human.skip_reason, t.text) for t in ann_turns] == [(True, "TIMEOUT", "")] * 3
        assert debate.state == S.DEBATE_STATE_COMPLETED and len(milo_turns) == 3
    elif policy == P.HUMAN_TIMEOUT_POLICY_FORFEIT:
        # one wait; the seat's remaining turns skipped without waiting
        assert [w.round_number for w in awaited] == [t.round_number for t in timed_out] == [1]
        assert [(t.human.skipped, t.human.skip_reason) for t in ann_turns] == [(True, "FORFEITED")] * 3
        assert debate.state == S.DEBATE_STATE_COMPLETED and len(milo_turns) == 3
        assert "forfeit" in timed_out[0].message
    else:
        # the debate ends, with the reason stated; nothing after round 1's wait was played
        assert [w.round_number for w in awaited] == [t.round_number for t in timed_out] == [1]
        assert debate.state == S.DEBATE_STATE_FAILED and debate.end_reason.startswith("HUMAN_TURN_TIMEOUT: Ann ")
        (ending,) = of_kind(events, "debate_failed")
        assert ending.reason == "HUMAN_TURN_TIMEOUT" and "round 1" in ending.message
        assert ann_turns == [] and milo_turns == []
    # a skipped turn is never charged: no ledger row for the seat
    assert not [line for line in debate.cost.by_participant if line.key == "Ann"]
    assert not debate.HasField("awaiting_human")


async def test_a_human_seat_in_a_simultaneous_round_waits_beside_the_models(suite):
    suite, alice, _ = suite
    debate_id = await alice.create_and_start(human_config(rounds=1, order=c.TURN_ORDER_SIMULTANEOUS))
    await alice.until(debate_id, "turn_completed")  # Milo's turn ends while Ann is awaited
    assert (await alice.get(debate_id)).awaiting_human.participant == "Ann"
    await alice.submit(debate_id, "Ann", 1, ANN_1, "sim-1")
    events = await alice.events(debate_id)
    assert of_kind(events, "debate_completed")
    assert sorted(t.turn.participant for t in of_kind(events, "turn_completed")) == ["Ann", "Milo"]


async def test_a_bad_human_seat_config_is_refused_with_field_details(suite):
    _, alice, _ = suite
    config = human_config()
    config.human.turn_timeout_seconds = -5
    config.human.timeout_policy = 9  # type: ignore[assignment]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.stub.CreateDebate(pb.CreateDebateRequest(config=config), metadata=alice.metadata)
    code, _, violations = failure(refused.value)
    assert code == CODE.INVALID_ARGUMENT
    assert [f for f, _ in violations] == ["config.human.turn_timeout_seconds", "config.human.timeout_policy"]
    listed = await alice.stub.ListDebates(pb.ListDebatesRequest(), metadata=alice.metadata)
    assert list(listed.debates) == []


async def test_a_cancel_while_a_human_seat_is_awaited_ends_the_debate_and_the_wait(suite):
    _, alice, _ = suite
    debate_id = await alice.create_and_start(human_config(rounds=2))
    await alice.until(debate_id, "human_turn_awaited")
    request = pb.CancelDebateRequest(debate_id=debate_id, reason="the person left")
    cancelled = (await alice.stub.CancelDebate(request, metadata=alice.metadata)).debate
    assert cancelled.state == S.DEBATE_STATE_CANCELLED and not cancelled.HasField("awaiting_human")
    events = await alice.events(debate_id)
    (ending,) = of_kind(events, "debate_failed")
    assert ending.reason == "CANCELLED" and ending.message == "the person left"
    assert not of_kind(events, "turn_completed")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.submit(debate_id, "Ann", 1, ANN_1, "after-cancel")
    assert failure(refused.value)[:2] == (CODE.FAILED_PRECONDITION, "HUMAN_TURN_NOT_AWAITED")
