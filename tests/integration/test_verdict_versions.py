"""Verdict versions (issue 18 part 1, issue 19 part 4): RejudgeDebate and ContinueDebate over the
three real services in this process (tests/reliability/inprocess.py: the real judge with the
simulated judge model, the real accounting and its ledger), on both stores: SQLite files, or one
PostgreSQL database that the orchestrator and accounting share (the orchestrator_backend fixture).

The ledger is read from accounting's own table (`usage`), not from the orchestrator's figures:
- a re-judging with another panel (two orderings, another rubric) keeps verdict 1 and the
  rounds as they were, stores verdict 2 with its calls in the ledger under its own keys, calls
  no debater model (no new debater row), and a retry of its request acts once;
- a continuation adds rounds and a second verdict version; every turn, assessment, verdict 1
  and ledger row of the first debate is unchanged, and nothing is charged twice;
- bad input changes nothing: an unknown judge model, no request_id, a debate not COMPLETED
  (FAILED_PRECONDITION with a PreconditionFailure), another tenant's debate (NOT_FOUND).
"""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg
from google.rpc import error_details_pb2

from services.cli import main
from services.common.grpc_errors import error_details, status_details
from tests.reliability.inprocess import InProcessSuite

S = pb.DebateState
R = pb.VerdictReason
KEYS = {"alice": "key-alice-1234", "bob": "key-bob-56789"}
TIMEOUT = 60
ANOTHER_PANEL = c.JudgeConfig(
    models=["sim/judge"],
    orderings=2,
    rubric=c.Rubric(
        criteria=[
            c.Criterion(name="evidence", weight=3, description="facts and sources"),
            c.Criterion(name="rebuttal", weight=1, description="answers the other side"),
        ]
    ),
)


@pytest.fixture
def suite(orchestrator_backend):
    shared = {"database_url": orchestrator_backend.url} if orchestrator_backend.url else {}
    instant = {"sim_first_token_latency": 0.0, "sim_tokens_per_second": 0.0}
    running = InProcessSuite(
        orchestrator_backend.data_dir / "suite",
        overrides={
            "accounting": shared,
            "judge": instant,
            "orchestrator": {
                **shared,
                **instant,
                "api_keys": ",".join(f"{key}={name}" for name, key in KEYS.items()),
            },
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


class Api:
    """The orchestrator's API as one tenant, over a synchronous channel."""

    def __init__(self, suite: InProcessSuite, tenant: str = "alice"):
        self.channel = grpc.insecure_channel(suite.addresses["orchestrator"])
        self.stub = pbg.OrchestratorServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {KEYS[tenant]}"),)

    def call(self, method: str, request):
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=TIMEOUT)

    def get(self, debate_id: str) -> pb.Debate:
        return self.call("GetDebate", pb.GetDebateRequest(debate_id=debate_id)).debate

    def events(self, debate_id: str) -> list[pb.DebateEvent]:
        stream = self.stub.StreamDebateEvents(
            pb.StreamDebateEventsRequest(debate_id=debate_id), metadata=self.metadata, timeout=TIMEOUT
        )
        return [r.event for r in stream if r.event.WhichOneof("payload") != "heartbeat"]

    def wait_completed(self, debate_id: str) -> pb.Debate:
        deadline = time.monotonic() + TIMEOUT
        while True:
            debate = self.get(debate_id)
            if debate.state not in (S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_QUEUED, S.DEBATE_STATE_CREATED):
                assert debate.state == S.DEBATE_STATE_COMPLETED, debate.end_reason
                return debate
            assert time.monotonic() < deadline, "the debate did not end"
            time.sleep(0.05)

    def completed_debate(self, rounds: int = 2) -> pb.Debate:
        config = c.DebateConfig(
            topic="Cities should ban private cars from their centres",
            participants=[
                c.Participant(name="Ada", model="sim/debater", persona="an urbanist", stance="for"),
                c.Participant(name="Milo", model="sim/debater", persona="a driver", stance="against"),
            ],
            judge=c.JudgeConfig(models=["sim/judge"], orderings=1),
            format=c.DebateFormat(round_limit=rounds),
            max_tokens_per_turn=60,
        )
        debate = self.call("CreateDebate", pb.CreateDebateRequest(config=config)).debate
        self.call("StartDebate", pb.StartDebateRequest(debate_id=debate.debate_id))
        return self.wait_completed(debate.debate_id)


def ledger(suite: InProcessSuite, backend, debate_id: str) -> dict[str, tuple[str, str, int, int, str]]:
    """Accounting's rows of the debate, read from its own table: request_id -> (participant,
    role, round, tokens, cost). (The simulated models cost $0: tokens are what differ.)"""
    statement = (
        "SELECT request_id, participant, role, round_number, prompt_tokens + completion_tokens, cost "
        "FROM usage WHERE debate_id = ?"
    )
    if backend.url:
        rows = backend.query(statement, (debate_id,))
    else:
        path = next(suite.root.rglob("ledger.sqlite3"))
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute(statement, (debate_id,)).fetchall()
        finally:
            db.close()
    return {key: (participant, role, r, tokens, str(Decimal(cost))) for key, participant, role, r, tokens, cost in rows}


def total(rows) -> Decimal:
    return sum((Decimal(cost) for *_, cost in rows), Decimal(0))


def tokens(rows) -> int:
    return sum(row[3] for row in rows)


def matches(line: c.CostLine, rows) -> bool:
    """A cost line is exactly the sum of these ledger rows: their number, tokens and USD."""
    rows = list(rows)
    return (line.calls, line.usage.total_tokens, Decimal(line.cost.amount or "0")) == (
        len(rows),
        tokens(rows),
        total(rows),
    )


def gap_free(events: list[pb.DebateEvent]) -> bool:
    return [e.sequence for e in events] == list(range(1, len(events) + 1))


def test_rejudging_with_another_panel_keeps_verdict_1_and_charges_only_its_own_calls_once(suite, orchestrator_backend):
    api = Api(suite)
    before = api.completed_debate()
    debate_id = before.debate_id
    rows_before = ledger(suite, orchestrator_backend, debate_id)
    assert [v.version for v in before.verdicts] == [1] and before.verdicts[0].reason == R.VERDICT_REASON_DEBATE_END
    assert before.verdicts[0].verdict == before.verdict and before.verdict.version == 1
    assert matches(before.verdicts[0].cost, (r for r in rows_before.values() if r[1] == "verdict"))
    events_before = api.events(debate_id)

    request = pb.RejudgeDebateRequest(debate_id=debate_id, judge=ANOTHER_PANEL, request_id="rejudge-1")
    answer = api.call("RejudgeDebate", request)
    second = answer.verdict_version
    assert second.version == 2 and second.reason == R.VERDICT_REASON_REJUDGE and second.request_id == "rejudge-1"
    assert second.judge.orderings == 2 and [k.name for k in second.judge.rubric.criteria] == ["evidence", "rebuttal"]
    assert [a.round_number for a in second.assessments] == [1, 2] and second.round_count == 2
    assert all(len(a.calls) == 2 for a in second.assessments)  # two orderings of the one model
    assert [a.version for a in answer.agreements] == [1] and answer.agreements[0] == second.agreement
    assert -1 <= second.agreement.rank_correlation <= 1

    # The ledger: every row of before unchanged, the new ones the re-judging's own, none a debater's.
    rows_after = ledger(suite, orchestrator_backend, debate_id)
    assert {k: rows_after[k] for k in rows_before} == rows_before
    new = {k: v for k, v in rows_after.items() if k not in rows_before}
    assert new and all(k.startswith(f"debates/{debate_id}/verdicts/2/") for k in new)
    assert {row[0] for row in new.values()} == {"judge"}
    assert {row[1] for row in new.values()} == {"judge", "verdict"}  # no debater row
    assert {row[2] for row in new.values()} == {0}  # by_round's line "0": every verdict version
    assert len(new) == sum(len(a.calls) for a in second.assessments) + len(second.verdict.calls)
    assert matches(second.cost, new.values()) and tokens(new.values()) > 0

    # The debate: verdict 1 and the rounds as they were, verdict 2 beside it and the latest.
    after = api.get(debate_id)
    assert after.state == S.DEBATE_STATE_COMPLETED and list(after.rounds) == list(before.rounds)
    assert after.verdicts[0] == before.verdicts[0]
    assert [v.version for v in after.verdicts] == [1, 2] and after.verdicts[1] == second
    assert after.verdict == second.verdict and after.verdict.version == 2
    assert Decimal(after.cost.total.amount) == total(rows_after.values())
    assert after.cost.usage.total_tokens == tokens(rows_after.values())
    by_round = {line.key: line for line in after.cost.by_round}
    assert {k: v for k, v in by_round.items() if k != "0"} == {
        line.key: line for line in before.cost.by_round if line.key != "0"
    }

    # Its events: on the debate's log after the first ones, the cost first, then the version.
    events = api.events(debate_id)
    assert gap_free(events) and events[: len(events_before)] == events_before
    kinds = [e.WhichOneof("payload") for e in events[len(events_before) :]]
    assert kinds[-1] == "verdict_version_rendered" and "cost_updated" in kinds
    assert events[-1].verdict_version_rendered.verdict_version == second
    assert events[-2].cost_updated.total == after.cost.total

    # A retry acts once: the same version, no new row, no new event.
    again = api.call("RejudgeDebate", request)
    assert again.verdict_version == second
    assert ledger(suite, orchestrator_backend, debate_id) == rows_after
    assert len(api.events(debate_id)) == len(events) and len(api.get(debate_id).verdicts) == 2

    # Another request is another version, compared with both earlier ones.
    third = api.call(
        "RejudgeDebate", pb.RejudgeDebateRequest(debate_id=debate_id, judge=ANOTHER_PANEL, request_id="rejudge-2")
    )
    assert third.verdict_version.version == 3 and [a.version for a in third.agreements] == [1, 2]
    assert third.agreements[1].same_winner and third.agreements[1].rank_correlation == 1.0  # the same judge


def test_bad_rejudge_and_continue_requests_change_nothing(suite, orchestrator_backend):
    api, bob = Api(suite), Api(suite, "bob")
    debate = api.completed_debate(rounds=1)
    debate_id = debate.debate_id
    rows = ledger(suite, orchestrator_backend, debate_id)
    events = api.events(debate_id)

    def refused(tenant_api: Api, method: str, request) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            tenant_api.call(method, request)
        return caught.value

    unknown = refused(
        api,
        "RejudgeDebate",
        pb.RejudgeDebateRequest(debate_id=debate_id, judge=c.JudgeConfig(models=["nope/judge"]), request_id="r"),
    )
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(unknown)[1]] == ["judge.models[0]"]
    no_id = refused(api, "RejudgeDebate", pb.RejudgeDebateRequest(debate_id=debate_id, judge=ANOTHER_PANEL))
    assert no_id.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(no_id)[1]] == ["request_id"]
    too_many = refused(
        api, "ContinueDebate", pb.ContinueDebateRequest(debate_id=debate_id, extra_rounds=20, request_id="c")
    )
    assert too_many.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(too_many)[1]] == ["extra_rounds"]
    for method, request in (
        ("RejudgeDebate", pb.RejudgeDebateRequest(debate_id=debate_id, judge=ANOTHER_PANEL, request_id="x")),
        ("ContinueDebate", pb.ContinueDebateRequest(debate_id=debate_id, extra_rounds=1, request_id="y")),
    ):
        assert refused(bob, method, request).code() == grpc.StatusCode.NOT_FOUND

    created = api.call(
        "CreateDebate", pb.CreateDebateRequest(config=pb.Debate.FromString(debate.SerializeToString()).config)
    ).debate
    not_done = refused(
        api,
        "RejudgeDebate",
        pb.RejudgeDebateRequest(debate_id=created.debate_id, judge=ANOTHER_PANEL, request_id="z"),
    )
    assert not_done.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details(not_done)[0]
    assert info.reason == "DEBATE_NOT_COMPLETED"
    failures = []
    for detail in status_details(not_done):
        failure = error_details_pb2.PreconditionFailure()
        if detail.Unpack(failure):
            failures.append(failure)
    assert failures and failures[0].violations[0].subject == f"debates/{created.debate_id}"
    assert api.get(created.debate_id).state == S.DEBATE_STATE_CREATED

    after = api.get(debate_id)
    assert after == debate or (list(after.verdicts) == list(debate.verdicts) and after.rounds == debate.rounds)
    assert ledger(suite, orchestrator_backend, debate_id) == rows
    assert api.events(debate_id) == events


def test_continuing_adds_rounds_and_a_second_version_and_charges_nothing_twice(suite, orchestrator_backend):
    api = Api(suite)
    before = api.completed_debate(rounds=2)
    debate_id = before.debate_id
    rows_before = ledger(suite, orchestrator_backend, debate_id)
    events_before = api.events(debate_id)

    request = pb.ContinueDebateRequest(
        debate_id=debate_id, extra_rounds=2, question="What about deliveries and emergency vehicles?", request_id="c1"
    )
    answer = api.call("ContinueDebate", request)
    assert answer.verdict_version == 2
    assert answer.debate.state in (S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_COMPLETED)
    assert answer.debate.round_limit == 4
    after = api.wait_completed(debate_id)
    retried = api.call("ContinueDebate", request)  # acts once: no third version, no more rounds
    assert retried.verdict_version == 2 and retried.debate.round_limit == 4

    assert [r.round_number for r in after.rounds] == [1, 2, 3, 4]
    assert list(after.rounds[:2]) == list(before.rounds)  # turns and assessments as they were
    assert all(r.HasField("assessment") for r in after.rounds)
    assert [v.version for v in after.verdicts] == [1, 2] and after.verdicts[0] == before.verdicts[0]
    second = after.verdicts[1]
    assert second.reason == R.VERDICT_REASON_CONTINUATION and second.first_round == 3 and second.round_count == 4
    assert second.question == request.question and second.request_id == "c1"
    assert after.verdict == second.verdict and second.verdict.version == 2 and second.HasField("agreement")

    rows_after = ledger(suite, orchestrator_backend, debate_id)
    assert {k: rows_after[k] for k in rows_before} == rows_before
    new = {k: v for k, v in rows_after.items() if k not in rows_before}
    assert {row[2] for row in new.values()} == {0, 3, 4}
    assert {k for k, v in new.items() if v[2] == 0} == {
        k for k in new if k.startswith(f"debates/{debate_id}/verdicts/2/verdict")
    }
    assert matches(second.cost, (v for v in new.values() if v[2] == 0))
    assert Decimal(after.cost.total.amount) == total(rows_after.values())
    assert after.cost.usage.total_tokens == tokens(rows_after.values())
    debater_rows = [v for v in new.values() if v[1] == "debater"]
    assert len(debater_rows) == 4  # two debaters, two new rounds, one attempt each

    events = api.events(debate_id)
    assert gap_free(events) and events[: len(events_before)] == events_before
    kinds = [e.WhichOneof("payload") for e in events[len(events_before) :]]
    assert kinds[0] == "debate_continued" and kinds[1] == "state_changed"
    assert kinds.count("round_started") == 2 and kinds[-3:] == [
        "verdict_version_rendered",
        "cost_updated",
        "debate_completed",
    ]
    assert events[len(events_before)].debate_continued.question == request.question

    # The continued debate can be re-judged: every round, the added ones too.
    rejudged = api.call(
        "RejudgeDebate", pb.RejudgeDebateRequest(debate_id=debate_id, judge=ANOTHER_PANEL, request_id="r-after")
    ).verdict_version
    assert rejudged.version == 3 and [a.round_number for a in rejudged.assessments] == [1, 2, 3, 4]


def test_the_cli_rejudges_and_continues_a_debate_and_shows_its_verdict_history(
    suite, orchestrator_backend, monkeypatch, capsys
):
    api = Api(suite)
    debate_id = api.completed_debate(rounds=1).debate_id
    monkeypatch.setenv("DEBATE_ENGINE_API_KEY", KEYS["alice"])
    monkeypatch.setenv("NO_COLOR", "1")
    target = ["--target", suite.addresses["orchestrator"]]
    assert main(["rejudge", debate_id, "--judge", "sim/judge", "--orderings", "2", *target]) == 0
    shown = capsys.readouterr().out
    assert "Verdict version 2 (re-judged by sim/judge ×2)" in shown and "Verdict history" in shown
    assert "v1 " in shown and "debate end" in shown and "v2 *" in shown and "same winner" in shown
    assert shown.count("against version 1:") == 1  # said once, not again under the version's lines

    code = main(["continue", debate_id, "--rounds", "1", "--question", "Who pays for the buses?", *target])
    shown = capsys.readouterr().out
    assert code == 0, shown
    assert "Continued: rounds 2 to 2" in shown and "Who pays for the buses?" in shown
    assert "Verdict version 3 (continued by sim/judge)" in shown and "debate completed" in shown
    assert "v3 *" in shown and "continued (rounds 2-2)" in shown  # the history, after the new verdict
    assert main(["attach", debate_id, *target]) == 0  # a continued debate, replayed to its last end
    shown = capsys.readouterr().out
    assert shown.count("Verdict history") == 1 and "v3 *" in shown and "Continued: rounds 2 to 2" in shown
    assert "Verdict version 3" in shown
    debate = api.get(debate_id)
    assert [v.version for v in debate.verdicts] == [1, 2, 3] and len(debate.rounds) == 2
