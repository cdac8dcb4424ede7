"""A human seat's wait survives a SIGKILL of the orchestrator (issue 19 part 3), on both stores:
the restarted orchestrator resumes the wait with the same deadline, and a turn submitted before
the kill is played once, with its text, and charged once."""

from __future__ import annotations

import asyncio

from services.orchestrator.run import turn_key
from tests.support.human_seat import TenantClient, human_config, human_suite, of_kind  # noqa: F401

ANN_1 = "A ban punishes the people who live furthest out."
ANN_2 = "Charge for parking and fund the buses; keep the streets open."


async def test_a_sigkill_while_a_human_seat_is_awaited_resumes_the_wait(human_suite):  # noqa: F811 (the fixture)
    suite = human_suite
    alice = TenantClient(suite.address("orchestrator"), "alice")
    try:
        debate_id = await alice.create_and_start(human_config(rounds=2, timeout_s=600))
        (awaited,) = of_kind(await alice.until(debate_id, "human_turn_awaited"), "human_turn_awaited")
        await suite.kill("orchestrator")
        await asyncio.sleep(1.0)  # a deadline counted again from the restart would move by this much at least
        await suite.start("orchestrator")

        # the same wait: the same round, seat and deadline, in the debate and in the log
        debate = await alice.get(debate_id)
        assert debate.awaiting_human == awaited
        events = await alice.until(debate_id, "human_turn_awaited", count=2)
        waits = of_kind(events, "human_turn_awaited")
        assert waits == [awaited, awaited]
        resumed = [e for e in of_kind(events, "state_changed") if "restart" in e.reason]
        assert resumed, [e.WhichOneof("payload") for e in events]
        await alice.submit(debate_id, "Ann", 1, ANN_1, "crash-r1")

        # a turn submitted just before a kill is not lost: played once, with its text, charged once
        await alice.until(debate_id, "human_turn_awaited", count=3)
        assert (await alice.submit(debate_id, "Ann", 2, ANN_2, "crash-r2")).duplicate is False
        await suite.kill("orchestrator")
        await suite.start("orchestrator")
        events = await asyncio.wait_for(alice.events(debate_id), 60)
        assert of_kind(events, "debate_completed"), [e.WhichOneof("payload") for e in events]
        debate = await alice.get(debate_id)
        assert [t.text for r in debate.rounds for t in r.turns if t.participant == "Ann"] == [ANN_1, ANN_2]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        rows = suite.query(
            "usage",
            "SELECT request_id, CAST(cost AS TEXT) FROM usage WHERE debate_id = ? AND participant = ?",
            (debate_id, "Ann"),
        )
        keys = sorted(key for key, _ in rows)
        assert turn_key(debate_id, 1, "Ann", 1) in keys
        # round 2's turn: one row for its completed attempt, plus at most one for an attempt the kill cut
        assert [k for k in keys if "/rounds/2/" in k][-1] == turn_key(
            debate_id, 2, "Ann", debate.rounds[1].turns[0].attempt
        )
        assert all(float(cost) == 0 for _, cost in rows)
        (ann,) = [line for line in debate.cost.by_participant if line.key == "Ann"]
        assert float(ann.cost.amount or "0") == 0
        # a retry after all that still acts once
        assert (await alice.submit(debate_id, "Ann", 2, ANN_2, "crash-r2")).duplicate
    finally:
        await alice.close()
