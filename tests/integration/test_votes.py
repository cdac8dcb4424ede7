"""Human votes, judge calibration and judge audits (issue 18 parts 4 and 5) over real gRPC: an
orchestrator on port 0 (on both stores, SQLite and PostgreSQL), with the real judge service
in-process on port 0 (its simulated judges, including the biased `sim/judge-long` and
`sim/judge-first`), the simulated debaters made instant, and the in-memory accounting stand-in.
Two tenants by API key: alice and bob."""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.common.auth import bearer_metadata
from services.common.grpc_errors import error_details
from services.judge.server import build_service as build_judge
from services.judge.settings import JudgeSettings
from services.orchestrator.server import build_service as build_orchestrator
from services.orchestrator.settings import OrchestratorSettings
from tests.helpers import ROOT
from tests.support.orchestrator_fakes import MemoryAccounting

S = pb.DebateState
ALICE, BOB = "alice-key-0001", "bob-key-00002"
INSTANT = {"sim_first_token_latency": 0.0, "sim_tokens_per_second": 0.0}
PERSONAS = ["a pragmatic economist", "a sceptical historian", "an urban engineer", "a public-health doctor"]
TOPICS = [
    "Cities should ban private cars from their centres",
    "Remote work is better for society than office work",
    "Nuclear power should replace coal within ten years",
    "Homework should be abolished in primary schools",
]


def config(judge: str = "sim/judge", rounds: int = 1, seed: int = 1, topic: int = 0) -> c.DebateConfig:
    return c.DebateConfig(
        topic=TOPICS[topic % len(TOPICS)],
        participants=[
            c.Participant(name=name, model="sim/debater", persona=PERSONAS[(seed + i) % 4], stance=stance)
            for i, (name, stance) in enumerate((("ada", "for"), ("milo", "against")))
        ],
        judge=c.JudgeConfig(models=[judge]),
        format=c.DebateFormat(round_limit=rounds),
        seed=seed,
    )


class Suite:
    def __init__(self, stub: pbg.OrchestratorServiceStub, address: str):
        self.stub = stub
        self.address = address

    async def run(self, cfg: c.DebateConfig, key: str = ALICE) -> pb.Debate:
        """A debate of the tenant of `key`, run to its end."""
        auth = bearer_metadata(key)
        debate_id = (await self.stub.CreateDebate(pb.CreateDebateRequest(config=cfg), metadata=auth)).debate.debate_id
        await self.stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), metadata=auth)
        async for _ in self.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), metadata=auth):
            pass
        return await self.get(debate_id, key)

    async def get(self, debate_id: str, key: str = ALICE) -> pb.Debate:
        request = pb.GetDebateRequest(debate_id=debate_id)
        return (await self.stub.GetDebate(request, metadata=bearer_metadata(key))).debate

    async def vote(
        self, debate_id: str, voter: str, winner: str = "", tie: bool = False, key: str = ALICE
    ) -> pb.CastVoteResponse:
        request = pb.CastVoteRequest(debate_id=debate_id, voter=voter, winner=winner, tie=tie)
        return await self.stub.CastVote(request, metadata=bearer_metadata(key))

    async def report(self, min_votes: int = 0, key: str = ALICE) -> dict[str, pb.JudgeReport]:
        response = await self.stub.GetJudgeReport(
            pb.GetJudgeReportRequest(min_votes=min_votes), metadata=bearer_metadata(key)
        )
        return {r.judge: r for r in response.judges}


@pytest.fixture
async def suite(orchestrator_backend):
    judge = await build_judge(JudgeSettings(port=0, **INSTANT))
    await judge.start()
    settings = OrchestratorSettings(
        port=0,
        judge_service_addr=judge.address,
        api_keys=f"{ALICE}=alice,{BOB}=bob",
        **INSTANT,
        **orchestrator_backend.settings(),
    )
    orchestrator = await build_orchestrator(settings, accounting=MemoryAccounting())
    port = await orchestrator.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield Suite(pbg.OrchestratorServiceStub(channel), f"127.0.0.1:{port}")
    await channel.close()
    await orchestrator.stop(0)
    await judge.stop(0)


def counts(tally: pb.VoteTally) -> dict[str, int]:
    return {("(tie)" if line.tie else line.winner): line.votes for line in tally.counts}


# ------------------------------------------------------------------------------------ votes


async def test_one_vote_per_voter_per_debate_and_a_repeated_vote_replaces_the_earlier(suite):
    debate = await suite.run(config())
    assert debate.state == S.DEBATE_STATE_COMPLETED and debate.votes.voters == 0
    assert counts(debate.votes) == {"ada": 0, "milo": 0, "(tie)": 0}

    first = await suite.vote(debate.debate_id, "carol", "ada")
    assert not first.replaced and counts(first.votes) == {"ada": 1, "milo": 0, "(tie)": 0}
    assert first.votes.has_majority and first.votes.majority_winner == "ada"

    again = await suite.vote(debate.debate_id, "carol", tie=True)
    assert again.replaced and again.votes.voters == 1
    assert counts(again.votes) == {"ada": 0, "milo": 0, "(tie)": 1} and again.votes.majority_tie

    await suite.vote(debate.debate_id, "dave", "milo")
    split = await suite.vote(debate.debate_id, "erin@example.org", "ada")
    assert split.votes.voters == 3 and not split.votes.has_majority  # 1 tie, 1 milo, 1 ada
    last = await suite.vote(debate.debate_id, "carol", "milo")  # carol changes her mind: 2 of 3 for milo
    assert last.replaced and last.votes.voters == 3
    assert last.votes.has_majority and last.votes.majority_winner == "milo" and not last.votes.majority_tie

    stored = await suite.get(debate.debate_id)
    assert stored.votes == last.votes  # GetDebate shows the same tally


async def test_another_tenants_vote_is_not_found_and_changes_nothing(suite):
    debate = await suite.run(config())
    await suite.vote(debate.debate_id, "carol", "ada")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.vote(debate.debate_id, "carol", "milo", key=BOB)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.vote(debate.debate_id, "mallory", "milo", key=BOB)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    votes = (await suite.get(debate.debate_id)).votes
    assert counts(votes) == {"ada": 1, "milo": 0, "(tie)": 0} and votes.voters == 1


@pytest.mark.parametrize(
    ("voter", "winner", "tie", "fields"),
    [
        ("carol", "nobody", False, ["winner"]),  # not a participant
        ("carol", "", False, ["winner"]),  # no choice
        ("carol", "ada", True, ["winner"]),  # both a winner and a tie
        ("", "ada", False, ["voter"]),
        ("bad voter!", "nobody", False, ["voter", "winner"]),
        ("x" * 129, "ada", False, ["voter"]),
    ],
)
async def test_a_bad_vote_is_invalid_argument_with_field_details_and_changes_nothing(suite, voter, winner, tie, fields):
    debate = await suite.run(config())
    await suite.vote(debate.debate_id, "carol", "ada")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.vote(debate.debate_id, voter, winner, tie)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(caught.value)
    assert info is not None and info.reason == "INVALID_ARGUMENT"
    assert sorted(f for f, _ in violations) == fields
    votes = (await suite.get(debate.debate_id)).votes
    assert counts(votes) == {"ada": 1, "milo": 0, "(tie)": 0} and votes.voters == 1


async def test_a_debate_not_running_or_completed_takes_no_vote(suite):
    auth = bearer_metadata(ALICE)
    created = (await suite.stub.CreateDebate(pb.CreateDebateRequest(config=config()), metadata=auth)).debate
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.vote(created.debate_id, "carol", "ada")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = error_details(caught.value)
    assert info is not None and info.reason == "DEBATE_NOT_VOTABLE"
    assert (await suite.get(created.debate_id)).votes.voters == 0


async def test_a_running_debate_takes_votes(suite):
    auth = bearer_metadata(ALICE)
    cfg = config(rounds=2)
    debate_id = (await suite.stub.CreateDebate(pb.CreateDebateRequest(config=cfg), metadata=auth)).debate.debate_id
    await suite.stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), metadata=auth)
    stream = suite.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), metadata=auth)
    async for response in stream:
        if response.event.WhichOneof("payload") == "round_started":  # RUNNING now
            cast = await suite.vote(debate_id, "carol", "milo")
            assert cast.votes.voters == 1
            break
    stream.cancel()
    debate = await suite.run(config())  # the first one ends meanwhile; its vote stays
    assert debate.votes.voters == 0
    assert (await suite.get(debate_id)).votes.majority_winner == "milo"


# ------------------------------------------------------------------------------ calibration


async def test_calibration_equals_the_hand_computed_agreement_with_the_human_majority(suite):
    """Six debates of alice judged by sim/judge and two by sim/judge-long, votes scripted against
    each verdict; bob's votes on his own debate do not count for alice."""
    judged = [await suite.run(config(seed=seed, topic=seed)) for seed in range(1, 7)]
    long_judged = [await suite.run(config("sim/judge-long", seed=seed, topic=seed)) for seed in (7, 8)]
    bobs = await suite.run(config(seed=9), key=BOB)

    def winner(d: pb.Debate) -> str:
        """The verdict's choice: the winner's name, or "tie"."""
        assert d.state == S.DEBATE_STATE_COMPLETED, d.end_reason
        return "tie" if d.verdict.tie else d.verdict.winner

    def loser(d: pb.Debate) -> str:
        """A participant the verdict did not choose."""
        return next(p.name for p in d.config.participants if p.name != winner(d))

    def other(d: pb.Debate) -> str:
        """A third choice, neither winner(d) nor loser(d)."""
        return "ada" if winner(d) == "tie" and loser(d) != "ada" else ("milo" if winner(d) == "tie" else "tie")

    async def votes(d: pb.Debate, choices: list[str], key: str = ALICE) -> None:
        for i, choice in enumerate(choices):
            tie = choice == "tie"
            await suite.vote(d.debate_id, f"voter{i}", "" if tie else choice, tie, key=key)

    d1, d2, d3, d4, d5, d6 = judged
    await votes(d1, [winner(d1)] * 3)  # agrees
    await votes(d2, [loser(d2), loser(d2), winner(d2)])  # majority against the verdict
    await votes(d3, [winner(d3), winner(d3)])  # agrees, but only 2 votes
    await votes(d4, [winner(d4), winner(d4), loser(d4), loser(d4)])  # no strict majority
    await votes(d5, [other(d5), other(d5), winner(d5)])  # the humans chose a third way
    await votes(d6, [winner(d6), winner(d6), loser(d6), other(d6), winner(d6)])  # 3 of 5 agree
    l1, l2 = long_judged
    await votes(l1, [loser(l1)] * 4)  # disagrees
    await votes(l2, [winner(l2), winner(l2), winner(l2), other(l2)])  # agrees
    await votes(bobs, [loser(bobs)] * 5, key=BOB)  # bob's: not in alice's report

    report = await suite.report()  # min_votes: the setting, 3
    # By hand: sim/judge counts d1, d2, d5, d6 (d3 has 2 votes, d4 no majority): d1 and d6 agree.
    assert (report["sim/judge"].calibration_debates, report["sim/judge"].calibration_agreed) == (4, 2)
    assert report["sim/judge"].calibration == pytest.approx(2 / 4)
    assert (report["sim/judge-long"].calibration_debates, report["sim/judge-long"].calibration_agreed) == (2, 1)
    with_two = await suite.report(min_votes=2)  # d3 counts too, and agrees
    assert (with_two["sim/judge"].calibration_debates, with_two["sim/judge"].calibration_agreed) == (5, 3)
    # l1 re-judged by sim/judge: that verdict counts for sim/judge too, and sim/judge-long's stays.
    rejudged = await suite.stub.RejudgeDebate(
        pb.RejudgeDebateRequest(debate_id=l1.debate_id, judge=c.JudgeConfig(models=["sim/judge"]), request_id="r1"),
        metadata=bearer_metadata(ALICE),
    )
    second = rejudged.verdict_version.verdict
    agrees = ("tie" if second.tie else second.winner) == loser(l1)  # the humans' majority on l1
    after = await suite.report()
    assert (after["sim/judge"].calibration_debates, after["sim/judge"].calibration_agreed) == (5, 2 + agrees)
    assert (after["sim/judge-long"].calibration_debates, after["sim/judge-long"].calibration_agreed) == (2, 1)
    bob = await suite.report(key=BOB)
    assert (bob["sim/judge"].calibration_debates, bob["sim/judge"].calibration_agreed) == (1, 0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.report(min_votes=-1)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ----------------------------------------------------------------------------------- audits


async def test_the_audit_flags_the_judges_biased_by_design_and_not_the_unbiased_one(suite):
    for judge in ("sim/judge", "sim/judge-long", "sim/judge-first"):
        for seed in range(1, 5):
            debate = await suite.run(config(judge, rounds=2, seed=seed, topic=seed))
            assert debate.state == S.DEBATE_STATE_COMPLETED, debate.end_reason
    report = await suite.report()
    fair, long, first = report["sim/judge"], report["sim/judge-long"], report["sim/judge-first"]
    print(
        {
            name: (r.length_bias.rho, r.position_bias.rho, r.ordering_disagreement, list(r.flags))
            for name, r in report.items()
        }
    )
    # 4 debates x 2 rounds, each counted once
    assert long.length_bias.points == first.position_bias.points == fair.position_bias.points == 8
    assert "length" in long.flags and long.length_bias.rho >= 0.5 and long.length_bias.p_value < 0.05
    assert "position" in first.flags and first.position_bias.rho <= -0.5
    assert "ordering" in first.flags and first.ordering_disagreement == pytest.approx(1.0)
    assert first.ordering_rounds == 8
    assert list(fair.flags) == []
    assert fair.ordering_disagreement == 0.0 and abs(fair.position_bias.rho) < 0.5
    assert "position" not in long.flags and "length" not in first.flags


# -------------------------------------------------------------------------------------- CLI


async def cli(suite: Suite, *args: str) -> tuple[int, str]:
    """`debate-engine ARGS --target <the suite>` as alice, as a process: its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        "--target",
        suite.address,
        cwd=ROOT,
        env={**os.environ, "DEBATE_ENGINE_API_KEY": ALICE, "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_the_cli_votes_and_prints_the_audit(suite):
    debate = await suite.run(config("sim/judge-first", rounds=2))
    code, out = await cli(suite, "vote", debate.debate_id, "milo", "--voter", "carol")
    assert code == 0 and "carol: vote cast" in out and "majority: milo" in out, out
    code, out = await cli(suite, "vote", debate.debate_id, "tie", "--voter", "carol")
    assert code == 0 and "carol: vote replaced" in out and "majority: a tie" in out, out
    votes = (await suite.get(debate.debate_id)).votes
    assert votes.voters == 1 and votes.majority_tie
    code, out = await cli(suite, "vote", debate.debate_id, "nobody", "--voter", "carol")
    assert code != 0 and "winner" in out, out
    code, out = await cli(suite, "audit", "--min-votes", "1")
    assert code == 0, out
    line = next(line for line in out.splitlines() if "sim/judge-first" in line)
    # shown first in one ordering and second in the other, each debater averages the same: a tie,
    # as carol voted; 2 rounds are too few for the position bias (-1.00) to be significant
    assert debate.verdict.tie and "100% of 1" in line and "-1.00 (p 0.500, 2 rounds)" in line, out
    assert line.rstrip().endswith("ordering"), out
