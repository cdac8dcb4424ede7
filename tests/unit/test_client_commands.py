"""The client's commands against a fake orchestrator on a real channel (port 0, in process)."""

from __future__ import annotations

import io
import time
from concurrent import futures

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.cli import main
from services.client.commands import list_lines, parse_debater
from services.client.style import Style, cell_len
from services.common.errors import FieldViolation, InvalidArgument
from services.common.grpc_errors import STATUS_DETAILS_KEY, status_for
from tests.unit.test_client_view import simultaneous_debate


class FakeOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self):
        self.log = simultaneous_debate().log
        self.configs = {}
        self.cancelled = []

    def CreateDebate(self, request, context):
        violations = []
        if not request.config.topic:
            violations.append(FieldViolation("config.topic", "must not be empty"))
        if len(request.config.participants) < 2:
            violations.append(FieldViolation("config.participants", "2 to 8 debaters"))
        if violations:
            status = status_for(InvalidArgument(violations))
            context.set_trailing_metadata(((STATUS_DETAILS_KEY, status.SerializeToString()),))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, status.message)
        self.configs["d1"] = request.config
        return pb.CreateDebateResponse(
            debate=pb.Debate(debate_id="d1", config=request.config, state=pb.DEBATE_STATE_CREATED)
        )

    def StartDebate(self, request, context):
        return pb.StartDebateResponse(
            debate=pb.DebateSummary(debate_id=request.debate_id, state=pb.DEBATE_STATE_RUNNING)
        )

    def GetDebate(self, request, context):
        if request.debate_id not in self.configs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"debate {request.debate_id} not found")
        return pb.GetDebateResponse(
            debate=pb.Debate(
                debate_id=request.debate_id,
                config=self.configs[request.debate_id],
                state=pb.DEBATE_STATE_RUNNING,
                last_sequence=len(self.log),
            )
        )

    def StreamDebateEvents(self, request, context):
        for event in self.log:
            if event.sequence > request.after_sequence:
                yield pb.StreamDebateEventsResponse(event=event)

    def ListDebates(self, request, context):
        return pb.ListDebatesResponse(
            debates=[
                pb.DebateSummary(
                    debate_id="d1",
                    topic="Cities should ban cars",
                    state=pb.DEBATE_STATE_COMPLETED,
                    current_round=3,
                    round_limit=3,
                ),
                pb.DebateSummary(
                    debate_id="9fba71c2-9ee6-461b-82a1-9ff9da04b869",
                    topic="Cities should ban private cars from their historic centres, and charge for parking 👩‍🍳",
                    state=pb.DEBATE_STATE_BUDGET_EXCEEDED,
                    current_round=12,
                    round_limit=20,
                    cost=c.Money(currency_code="USD", amount="1234.5678"),
                    create_time={"seconds": 1_790_000_000},
                ),
            ]
        )

    def CancelDebate(self, request, context):
        self.cancelled.append(request.debate_id)
        return pb.CancelDebateResponse(
            debate=pb.DebateSummary(debate_id=request.debate_id, state=pb.DEBATE_STATE_CANCELLED)
        )


@pytest.fixture
def orchestrator():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    fake = FakeOrchestrator()
    orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    fake.target = f"127.0.0.1:{port}"
    yield fake
    server.stop(None)


def test_demo_against_a_target_shows_the_debate_and_exits_zero(orchestrator, capsys):
    assert main(["demo", "--target", orchestrator.target]) == 0
    out = capsys.readouterr().out
    for marker in (
        "Cities should ban private cars",
        "Ada",
        "Milo",
        "Round 1 scores",
        "Round 3 scores",
        "Winner: Ada",
        "Cost",
        "debate completed",
    ):
        assert marker in out
    assert "starting the suite" not in out


def test_bad_input_shows_the_field_violations_and_exits_two(orchestrator, capsys):
    code = main(
        [
            "debate",
            "--target",
            orchestrator.target,
            "--topic",
            "",
            "--debater",
            "A=sim/debater:a poet",
            "--judge",
            "sim/judge",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "config.topic" in err and "must not be empty" in err and "config.participants" in err


def test_attach_replays_a_debate_by_id(orchestrator, capsys):
    main(["demo", "--target", orchestrator.target])
    capsys.readouterr()
    assert main(["attach", "d1", "--target", orchestrator.target, "--after", "3"]) == 0
    assert "Winner: Ada" in capsys.readouterr().out


def test_attach_to_an_unknown_debate_fails_plainly(orchestrator, capsys):
    assert main(["attach", "nope", "--target", orchestrator.target]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_list_and_cancel(orchestrator, capsys):
    assert main(["list", "--target", orchestrator.target]) == 0
    out = capsys.readouterr().out
    assert "completed" in out
    # Issue 20, item 8: the list fits 80 columns, even with the longest state, a long id and topic.
    assert max(cell_len(line) for line in out.splitlines()) <= 80
    assert "9fba71c2-9ee6-461b-82a1-9ff9da04b869  budget_exceeded  12/20  $1234.5678" in out
    assert "\n    2026-09-21 14:13 UTC · Cities should ban private cars from their historic c…\n" in out
    assert main(["cancel", "d1", "--target", orchestrator.target]) == 0
    assert orchestrator.cancelled == ["d1"] and "cancelled" in capsys.readouterr().out


def test_list_says_why_a_debate_failed_and_whose_turn_one_awaits():
    deadline = Timestamp()
    deadline.FromNanoseconds(time.time_ns() + 125 * 10**9)
    debates = [
        pb.DebateSummary(
            debate_id="d1",
            state=pb.DEBATE_STATE_FAILED,
            current_round=2,
            round_limit=4,
            end_reason="HUMAN_TURN_TIMEOUT: Ann did not give round 2's turn in time",
        ),
        pb.DebateSummary(
            debate_id="d2",
            state=pb.DEBATE_STATE_RUNNING,
            current_round=1,
            round_limit=4,
            awaiting_human=pb.HumanTurnAwaited(round_number=1, participant="Ann", deadline=deadline),
        ),
        pb.DebateSummary(debate_id="d3", state=pb.DEBATE_STATE_RUNNING, current_round=1, round_limit=4),
    ]
    lines = list_lines(Style(color=False, unicode=True, width=100, live=False), debates)
    assert lines[2].split() == ["d1", "failed", "2/4", "$0.00"]
    assert lines[4] == "    failed: HUMAN_TURN_TIMEOUT: Ann did not give round 2's turn in time"
    assert lines[5].split()[:3] == ["d2", "running", "1/4"]
    assert lines[7].startswith("    awaits Ann's turn in round 1 (2m 0") and lines[7].endswith(
        "left): debate-engine play d2 --as Ann"
    )
    assert lines[8].split()[:2] == ["d3", "running"] and len(lines) == 10  # nothing more to say of d3


def test_an_unreachable_orchestrator_is_a_clear_failure(capsys):
    from tests.helpers import free_port

    port = free_port()
    for command in (["list"], ["cancel", "d1"], ["attach", "d1"], ["demo"]):
        assert main([*command, "--target", f"127.0.0.1:{port}"]) == 1
        assert capsys.readouterr().err == (
            f"debate-engine: no orchestrator answers at 127.0.0.1:{port}: start the suite with "
            "`debate-engine up` (in another terminal), or pass --target HOST:PORT\n"
        )
    assert main(["list", "--target", "nosuchhost.invalid:50051"]) == 1
    assert capsys.readouterr().err == (
        "debate-engine: the host of nosuchhost.invalid:50051 is not known here; check --target HOST:PORT\n"
    )


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("Ada=sim/debater:an economist:for", ("Ada", "sim/debater", "an economist", "for")),
        ("Ada=openai/gpt-4o:an economist", ("Ada", "openai/gpt-4o", "an economist", "")),
        (
            "Ada=sim/debater:a skeptic: hard to please:against the motion",
            ("Ada", "sim/debater", "a skeptic: hard to please", "against the motion"),
        ),
        # a model with ':' in brackets (issue 20, item 8)
        ("Ada=[ollama/llama3:8b]:a labour economist:for", ("Ada", "ollama/llama3:8b", "a labour economist", "for")),
        ("Ada=[ollama/llama3:8b]:a poet", ("Ada", "ollama/llama3:8b", "a poet", "")),
        (
            "Ada=[openai/ft:gpt-4o-mini:org::abc]:a judge: strict:for, but only on weekdays",
            ("Ada", "openai/ft:gpt-4o-mini:org::abc", "a judge: strict", "for, but only on weekdays"),
        ),
    ],
)
def test_debater_specs(spec, expected):
    p = parse_debater(spec)
    assert (p.name, p.model, p.persona, p.stance) == expected


@pytest.mark.parametrize(
    "spec",
    ["Ada", "Ada=sim/debater", "=sim/debater:x", "Ada=:x", "Ada=[ollama/llama3:8b:a poet", "Ada=[]:x", "Ada=[m]x"],
)
def test_bad_debater_specs_are_refused(spec):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_debater(spec)


def test_debate_flags_become_the_config(orchestrator, capsys):
    code = main(
        [
            "debate",
            "--target",
            orchestrator.target,
            "--topic",
            "Tabs or spaces?",
            "--debater",
            "T=openai/gpt-4o:a tab purist:tabs",
            "--debater",
            "S=anthropic/claude-3-5-sonnet-20241022:a pep8 fan:spaces",
            "--judge",
            "sim/judge",
            "--judge",
            "openai/gpt-4o-mini",
            "--rounds",
            "2",
            "--format",
            "sequential",
            "--max-tokens-per-turn",
            "300",
            "--budget",
            "0.50",
            "--seed",
            "3",
        ]
    )
    assert code == 0
    config = orchestrator.configs["d1"]
    assert [(p.name, p.model, p.persona, p.stance) for p in config.participants] == [
        ("T", "openai/gpt-4o", "a tab purist", "tabs"),
        ("S", "anthropic/claude-3-5-sonnet-20241022", "a pep8 fan", "spaces"),
    ]
    assert list(config.judge.models) == ["sim/judge", "openai/gpt-4o-mini"]
    assert (config.format.round_limit, config.format.turn_order) == (2, c.TURN_ORDER_SEQUENTIAL)
    assert (config.max_tokens_per_turn, config.budget.amount, config.budget.currency_code, config.seed) == (
        300,
        "0.50",
        "USD",
        3,
    )
    assert "budget $0.50" in capsys.readouterr().out


def test_colour_only_on_a_terminal_without_no_color(monkeypatch):
    class Terminal(io.StringIO):
        encoding = "utf-8"

        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert Style.for_stream(Terminal()).color and Style.for_stream(Terminal()).live
    assert not Style.for_stream(io.StringIO()).color
    monkeypatch.setenv("NO_COLOR", "1")
    assert not Style.for_stream(Terminal()).color


@pytest.mark.parametrize(
    "target, env, expected",
    [
        ("127.0.0.1:50051", None, "debate-engine attach d1"),
        ("10.0.0.2:9000", None, "debate-engine attach d1 --target 10.0.0.2:9000"),
        ("10.0.0.2:9000", "10.0.0.2:9000", "debate-engine attach d1"),
    ],
)
def test_ctrl_c_says_how_to_reattach_and_cancel(monkeypatch, target, env, expected):
    from services.client.session import detach_lines

    if env:
        monkeypatch.setenv("DEBATE_ENGINE_TARGET", env)
    else:
        monkeypatch.delenv("DEBATE_ENGINE_TARGET", raising=False)
    lines = detach_lines("d1", target)
    assert lines[0] == "detached: debate d1 goes on."
    assert lines[1].split(":", 1)[1].strip() == expected
    assert lines[2].split(":", 1)[1].strip() == expected.replace("attach", "cancel")
    # A suite started here stops with the command: no promise that the debate goes on.
    assert "stops" in detach_lines("d1", None)[0] and "debate-engine up" in detach_lines("d1", None)[1]


def test_the_debate_flags_set_the_human_seats_wait_and_none_by_default():
    import argparse

    from services.client.commands import debate_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    base = ["debate", "--topic", "t", "--debater", "A=human:x:for", "--debater", "B=sim/debater:y", "--judge", "j"]
    assert not debate_config(parser.parse_args(base)).HasField("human")  # the server's defaults
    config = debate_config(parser.parse_args([*base, "--turn-timeout-seconds", "90", "--timeout-policy", "forfeit"]))
    assert config.human == c.HumanSeatSettings(turn_timeout_seconds=90, timeout_policy=c.HUMAN_TIMEOUT_POLICY_FORFEIT)
    # out of range: sent as given, for the server to refuse with its field (exit 2)
    assert debate_config(parser.parse_args([*base, "--turn-timeout-seconds", "-5"])).human.turn_timeout_seconds == -5
    assert debate_config(parser.parse_args([*base, "--timeout-policy", "end_debate"])).human.timeout_policy == (
        c.HUMAN_TIMEOUT_POLICY_END_DEBATE
    )
