"""`debate-engine play ID --as PARTICIPANT` (issue 19 part 3) against the real suite: it says whose
turn the debate awaits, waits for the seat's turn, reads the text from standard input, gives it,
and reports the server's refusals with their exit codes."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from tests.helpers import ROOT
from tests.reliability.processes import KillableSuite
from tests.support.human_seat import API_KEYS, INSTANT, KEYS, P, TenantClient, human_config, of_kind

TEXT = "Charge for parking, and spend it on night buses.\nA ban helps only those who already live in town."


@pytest.fixture
async def suite(tmp_path):
    suite = KillableSuite(tmp_path / "data", {**INSTANT, "API_KEYS": API_KEYS}, log_level="WARNING")
    await suite.start_all()
    yield suite
    await suite.stop_all()


async def play(suite: KillableSuite, *args: str, stdin: str = "", key: str = KEYS["alice"]) -> tuple[int, str, str]:
    return await cli(suite, "play", *args, stdin=stdin, key=key)


async def cli(suite: KillableSuite, *args: str, stdin: str = "", key: str = KEYS["alice"]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        "--target",
        suite.address("orchestrator"),
        cwd=ROOT,
        env={**os.environ, "DEBATE_ENGINE_API_KEY": key, "NO_COLOR": "1"},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_play_gives_the_seats_turn_from_standard_input(suite):
    alice = TenantClient(suite.address("orchestrator"), "alice")
    try:
        debate_id = await alice.create_and_start(human_config(rounds=1))
        await alice.until(debate_id, "human_turn_awaited")

        code, _, err = await play(suite, debate_id, "--as", "Milo", stdin=TEXT)  # a model's seat: the server says so
        assert code == 2, err
        assert "FAILED_PRECONDITION [NOT_A_HUMAN_SEAT]: Milo is played by sim/debater, not a person" in err
        assert "participants/Milo" in err and "turn" not in err
        code, _, err = await play(suite, debate_id, "--as", "Zed", "--wait", stdin=TEXT)  # no such seat: no wait
        assert code == 2 and "participant" in err and "no participant named 'Zed' in this debate" in err
        code, _, err = await play(suite, debate_id, "--as", "Ann", stdin="word " * 300)
        assert code == 2 and "text" in err and "max_tokens_per_turn = 96" in err
        code, _, err = await play(suite, debate_id, "--as", "Ann", stdin=TEXT, key=KEYS["bob"])
        assert code == 1 and "NOT_FOUND" in err

        code, out, err = await play(suite, debate_id, "--as", "Ann", "--wait", stdin=TEXT)
        assert code == 0, err
        assert "round 1: the debate awaits Ann's turn;" in out and "left" in out
        assert "Ann's turn for round 1 given (" in out and "tokens, cost 0)" in out
        events = await alice.events(debate_id)
        assert of_kind(events, "debate_completed")
        (turn,) = [t.turn for t in of_kind(events, "turn_completed") if t.turn.participant == "Ann"]
        assert turn.text == TEXT and turn.model == "human"
        assert [t.turn.participant for t in of_kind(events, "turn_completed")] == ["Ann", "Milo"]  # nothing else given
        code, _, err = await play(suite, debate_id, "--as", "Ann", stdin=TEXT)
        assert code == 1 and "the debate is completed" in err
    finally:
        await alice.close()


async def test_the_debate_commands_human_flags_reach_the_server_which_checks_them(suite):
    seats = ["--debater", "Ann=human:a commuter:against", "--debater", "Milo=sim/debater:a city planner:for"]
    debate = ["debate", "--topic", "Cities should ban cars", *seats, "--judge", "sim/judge", "--rounds", "1"]
    code, _, err = await cli(suite, *debate, "--turn-timeout-seconds", "100000")
    assert code == 2 and "config.human.turn_timeout_seconds" in err and "must be 1 to 86400 s" in err
    # a 1 s wait that ends the debate: the debate fails, naming the seat (the view shows why)
    code, out, _ = await cli(suite, *debate, "--turn-timeout-seconds", "1", "--timeout-policy", "end_debate")
    assert code == 1 and "HUMAN_TURN_TIMEOUT" in out
    alice = TenantClient(suite.address("orchestrator"), "alice")
    try:
        listing = await alice.stub.ListDebates(pb.ListDebatesRequest(page_size=10), metadata=alice.metadata)
        (listed,) = listing.debates  # the refused one was never created
        got = await alice.get(listed.debate_id)
        assert got.config.human.turn_timeout_seconds == 1
        assert got.config.human.timeout_policy == P.HUMAN_TIMEOUT_POLICY_END_DEBATE
        assert got.state == pb.DEBATE_STATE_FAILED
    finally:
        await alice.close()
