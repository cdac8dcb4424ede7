"""`debate-engine play ID --as PARTICIPANT`: a person plays a human seat (issue 19 part 3).

Shows whose turn the debate awaits and until when, waits (with --wait) until it is this seat's,
shows what the other debaters said since the seat last spoke, reads the turn's text (from --text,
else standard input when it is not a terminal, else $VISUAL / $EDITOR on a temporary file whose
'#' lines are dropped) and gives it through SubmitTurn under a request_id of its own (a retry of
the call acts once). A PARTICIPANT that is not a human seat of the debate (no such participant, or
one a model plays) is refused by the server at once, as SubmitTurn refuses it: its message and
field are printed. Exit codes: 0 given, 1 failed (the debate ended, not this seat's turn now, the
server refused), 2 bad input (PARTICIPANT is not a human seat, the text is too long: the server's
message and field violations are printed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.client.session import DEFAULT_TARGET, EXIT_FAILED, EXIT_OK, EXIT_USAGE, default_target, orchestrator, run
from services.client.style import Style, safe_text
from services.client.view import state_name
from services.common.text import plural

POLL_S = 0.5  # how often --wait reads the debate
ENDED = (
    pb.DEBATE_STATE_COMPLETED,
    pb.DEBATE_STATE_FAILED,
    pb.DEBATE_STATE_CANCELLED,
    pb.DEBATE_STATE_BUDGET_EXCEEDED,
)
HUMAN = "human"  # the model name of a human seat (DebateConfig's participants)
EDITOR_HELP = "# Write {name}'s turn for round {round} below. Lines starting with '#' are dropped.\n"


def register(sub: argparse._SubParsersAction) -> None:
    play = sub.add_parser(
        "play",
        aliases=["submit"],
        help="play a human seat: give its turn when the debate awaits it",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    play.add_argument("debate_id", metavar="ID")
    play.add_argument("--as", dest="participant", required=True, metavar="PARTICIPANT", help="the seat you play")
    play.add_argument("--text", help="the turn's text (default: standard input, or an editor on a terminal)")
    play.add_argument("--wait", action="store_true", help="wait until it is this seat's turn (default: fail at once)")
    play.add_argument(
        "--target",
        metavar="HOST:PORT",
        default=default_target(),
        help=f"the orchestrator (default: $DEBATE_ENGINE_TARGET or {DEFAULT_TARGET})",
    )
    play.set_defaults(handler=_play)


def remaining(deadline_ns: int, now_ns: int | None = None) -> str:
    """The time left until a deadline as "4m 05s" ("0s" once passed)."""
    left = max(0, (deadline_ns - (time.time_ns() if now_ns is None else now_ns)) // 1_000_000_000)
    minutes, seconds = divmod(left, 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def turn_lines(style: Style, debate: pb.Debate, participant: str) -> list[str]:
    """The other debaters' turns since the seat last spoke (or the whole debate, if it never did),
    as the debate's models see them: in the simultaneous format (the default) the other turns of
    the round the seat is awaited in are not shown until that round ends, since no model of the
    round sees them either; in the sequential format the turns taken before the seat's are."""
    last = max((r.round_number for r in debate.rounds for t in r.turns if t.participant == participant), default=0)
    awaited = debate.awaiting_human.round_number if debate.HasField("awaiting_human") else 0
    sequential = debate.config.format.turn_order == common_pb2.TURN_ORDER_SEQUENTIAL
    lines = []
    for rnd in debate.rounds:
        if awaited and rnd.round_number >= awaited and not sequential:
            continue
        for turn in rnd.turns:
            if turn.participant != participant and rnd.round_number >= last and turn.text:
                lines.append(style.paint(f"round {rnd.round_number}, {safe_text(turn.participant)}:", "bold"))
                lines.append(safe_text(turn.text))
    return lines


def status_line(debate: pb.Debate) -> str:
    """Whose turn the debate awaits, or its state when it awaits none."""
    if debate.HasField("awaiting_human"):
        awaited = debate.awaiting_human
        return (
            f"round {awaited.round_number}: the debate awaits {safe_text(awaited.participant)}'s turn;"
            f" {remaining(awaited.deadline.ToNanoseconds())} left"
        )
    return f"the debate is {state_name(debate.state).lower()}; it awaits no human turn now"


def read_text(args: argparse.Namespace, awaited: pb.HumanTurnAwaited) -> str:
    """The turn's text: --text, else standard input when it is not a terminal, else an editor."""
    if args.text is not None:
        return str(args.text)
    if not sys.stdin.isatty():
        return sys.stdin.read()
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w+", suffix=".md", prefix="debate-turn-", delete=False) as draft:
        draft.write(EDITOR_HELP.format(name=awaited.participant, round=awaited.round_number))
        path = draft.name
    try:
        subprocess.run([*shlex.split(editor), path], check=True)
        with open(path, encoding="utf-8") as written:
            return "".join(line for line in written if not line.startswith("#"))
    finally:
        os.unlink(path)


def _play(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        async with orchestrator(args.target, sys.stdout, style) as stub:
            debate = await _awaited(stub, args, style)
            if debate is None:
                return EXIT_FAILED
            awaited = debate.awaiting_human
            lines = turn_lines(style, debate, args.participant)
            if lines:
                print("\n".join(lines))
            text = read_text(args, awaited).strip()
            if not text:
                print("debate-engine: nothing written; no turn given", file=sys.stderr)
                return EXIT_USAGE
            request = pb.SubmitTurnRequest(
                debate_id=args.debate_id,
                participant=args.participant,
                round_number=awaited.round_number,
                text=text,
                request_id=str(uuid.uuid4()),
            )
            reply = await stub.SubmitTurn(request, timeout=30)
        print(
            f"{safe_text(reply.participant)}'s turn for round {reply.round_number} given"
            f" ({plural(reply.completion_tokens, 'token')}, cost 0)"
        )
        return EXIT_OK

    return run(main, target=args.target)


async def _awaited(
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub, args: argparse.Namespace, style: Style
) -> pb.Debate | None:
    """The debate once it awaits this seat (with --wait, polling), or None (said why) when it does
    not now (without --wait) or ended."""
    shown = ""
    while True:
        debate = (await stub.GetDebate(pb.GetDebateRequest(debate_id=args.debate_id), timeout=30)).debate
        seats = {p.name: p.model for p in debate.config.participants}
        if seats.get(args.participant) != HUMAN:
            await _refused_seat(stub, args, debate)
        if debate.awaiting_human.participant == args.participant:
            print(style.paint(status_line(debate), "bold"))
            return debate
        line = status_line(debate)
        if debate.state in ENDED or not args.wait:
            print(f"debate-engine: not {safe_text(args.participant)}'s turn: {line}", file=sys.stderr)
            return None
        if line.split(";")[0] != shown:  # say each new state once, not each second of its countdown
            shown = line.split(";")[0]
            print(style.paint(f"{line}; waiting for {safe_text(args.participant)}'s turn ...", "dim"), flush=True)
        await asyncio.sleep(POLL_S)


async def _refused_seat(
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub, args: argparse.Namespace, debate: pb.Debate
) -> None:
    """Asks the server to take a turn from a seat that is not a human seat of `debate` (no such
    participant, or a model's), so that its own refusal is shown: InvalidArgument (the participant
    field) or FailedPrecondition NOT_A_HUMAN_SEAT, raised as grpc.RpcError. Such a seat's turn is
    refused whatever its text, so nothing is given (and no editor opens)."""
    await stub.SubmitTurn(
        pb.SubmitTurnRequest(
            debate_id=args.debate_id,
            participant=args.participant,
            round_number=debate.awaiting_human.round_number or 1,
            text=args.text or "(no text: this seat is not a human seat)",
            request_id=str(uuid.uuid4()),
        ),
        timeout=30,
    )
    raise AssertionError(f"the server took a turn from {args.participant}, which is not a human seat")
