"""The client's subcommands (demo, debate, attach, list and cancel; see services/client/__init__.py)
and the debate configurations they build from their flags."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.evidence import add_source_flags, apply_sources
from services.client.play import remaining
from services.client.session import DEFAULT_TARGET, EXIT_OK, default_target, orchestrator, run, run_debate, watch
from services.client.stopping import add_stopping_flags, stopping_rules
from services.client.style import Style, cell_len, clip_right, money, safe_text, table
from services.client.view import state_name

DEBATER_SYNTAX = "NAME=MODEL:PERSONA[:STANCE]"
DEMO_TOPIC = "Cities should ban private cars from their historic centres"
DEMO_DEBATERS = (
    common_pb2.Participant(
        name="Ada",
        model="sim/debater",
        stance="for",
        persona="an urban economist who argues from data, costs and measured outcomes in cities that tried it",
    ),
    common_pb2.Participant(
        name="Milo",
        model="sim/debater",
        stance="against",
        persona="a third-generation shopkeeper and civil-liberties advocate wary of top-down rules",
    ),
)


# -- configuration ------------------------------------------------------------------------


def demo_config(rounds: int = 3, seed: int = 7) -> common_pb2.DebateConfig:
    return common_pb2.DebateConfig(
        topic=DEMO_TOPIC,
        participants=DEMO_DEBATERS,
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=rounds, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=220,
        seed=seed,
    )


def parse_debater(spec: str) -> common_pb2.Participant:
    """NAME=MODEL:PERSONA[:STANCE] (DEBATER_SYNTAX) as a Participant. The model ends at the first ':',
    unless it is in brackets (NAME=[MODEL]:PERSONA[:STANCE], for a model whose name has a ':', such as
    ollama/llama3:8b); the stance starts at the last ':' of the rest. ArgumentTypeError when a part
    is missing or empty, or a bracket is not closed."""
    name, equals, rest = spec.partition("=")
    if rest.startswith("["):
        model, bracket, rest = rest[1:].partition("]")
        colon = ":" if bracket and rest.startswith(":") else ""
        persona = rest[1:] if colon else ""
    else:
        model, colon, persona = rest.partition(":")
    if not equals or not colon or not name.strip() or not model.strip() or not persona.strip():
        raise argparse.ArgumentTypeError(
            f"{spec!r}: expected {DEBATER_SYNTAX} (a model with a ':' in brackets: NAME=[MODEL]:PERSONA[:STANCE])"
        )
    stance = ""
    if ":" in persona:
        persona, _, stance = persona.rpartition(":")
    return common_pb2.Participant(
        name=name.strip(), model=model.strip(), persona=persona.strip(), stance=stance.strip()
    )


def parse_budget(text: str) -> common_pb2.Money:
    try:
        amount = Decimal(text.lstrip("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in USD") from None
    if not amount.is_finite() or amount <= 0:
        raise argparse.ArgumentTypeError("the budget must be a positive amount in USD")
    return common_pb2.Money(currency_code="USD", amount=str(amount))


def debate_config(args: argparse.Namespace) -> common_pb2.DebateConfig:
    turn_order = {"simultaneous": common_pb2.TURN_ORDER_SIMULTANEOUS, "sequential": common_pb2.TURN_ORDER_SEQUENTIAL}[
        args.format
    ]
    config = common_pb2.DebateConfig(
        topic=args.topic,
        participants=args.debater,
        judge=common_pb2.JudgeConfig(models=args.judge),
        format=common_pb2.DebateFormat(round_limit=args.rounds, turn_order=turn_order),
        max_tokens_per_turn=args.max_tokens_per_turn or 0,
        seed=args.seed or 0,
    )
    if args.budget is not None:
        config.budget.CopyFrom(args.budget)
    apply_sources(args, config)  # evidence: --source, --hide-sources-from-judge
    rules = stopping_rules(args)
    if rules is not None:
        config.stopping.CopyFrom(rules)
    if getattr(args, "turn_timeout_seconds", None) is not None:  # the server checks the range
        config.human.turn_timeout_seconds = args.turn_timeout_seconds
    if getattr(args, "timeout_policy", None):
        config.human.timeout_policy = common_pb2.HumanTimeoutPolicy.Value(
            f"{POLICY_PREFIX}{args.timeout_policy.upper()}"
        )
    return config


POLICY_PREFIX = "HUMAN_TIMEOUT_POLICY_"


def add_human_flags(parser: argparse.ArgumentParser) -> None:
    """--turn-timeout-seconds and --timeout-policy: DebateConfig.human, the wait for a human seat
    (a debater NAME=human:PERSONA[:STANCE], played with `debate-engine play`). Both are checked by
    the server (a bad value: exit 2, its field violation printed); unset, the server's defaults."""
    policy = common_pb2.HumanTimeoutPolicy
    policies = [policy.Name(v).removeprefix(POLICY_PREFIX).lower() for v in policy.values() if v]
    parser.add_argument(
        "--turn-timeout-seconds",
        type=int,
        metavar="N",
        help="seconds a human seat has for each turn, 1 to 86400 (default: 300)",
    )
    parser.add_argument(
        "--timeout-policy",
        choices=policies,
        help="what a human seat's missed turn does: skip_turn (stored empty, the debate goes on), forfeit "
        "(all its remaining turns are empty) or end_debate (the debate fails) (default: skip_turn)",
    )


# -- subcommands --------------------------------------------------------------------------


def _target(parser: argparse.ArgumentParser, *, starts_suite: bool) -> None:
    if starts_suite:
        parser.add_argument(
            "--target",
            metavar="HOST:PORT",
            help="an orchestrator already running (default: start the suite here, and stop it after)",
        )
        parser.add_argument(
            "--data-dir", help="where a suite started here keeps its SQLite files (default: a temporary folder)"
        )
        parser.add_argument("--verbose", action="store_true", help="relay the services' logs to stderr")
    else:
        parser.add_argument(
            "--target",
            metavar="HOST:PORT",
            default=default_target(),
            help=f"the orchestrator (default: $DEBATE_ENGINE_TARGET or {DEFAULT_TARGET})",
        )


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


DEBATE_DESCRIPTION = """\
Runs a debate and shows it live: each debater's tokens as they arrive, the judge's scores after
each round, the verdict and the cost table.

Each --debater is NAME=MODEL:PERSONA[:STANCE]. The model ends at the first ':', the stance
starts at the last; a model whose name has a ':' goes in brackets: Ada=[ollama/llama3:8b]:a
labour economist:for. PERSONA and STANCE are free text: the stance may be "for", "against" or
a position in your own words ("for, but only in city centres"). Models are named as LiteLLM
names them (openai/gpt-4o, anthropic/..., ollama/...) or sim/debater and sim/judge (the
built-in simulated models); provider keys are read by the services from their environment,
and a debate whose key is missing is refused before it starts, naming the variable.

Ctrl-C detaches: the debate goes on in the suite, and the commands to watch it again
(debate-engine attach ID) and to cancel it (debate-engine cancel ID) are printed.
--cancel-on-exit makes Ctrl-C cancel it instead. Without --target, the suite started here
stops on Ctrl-C, and the debate with it."""


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="start the suite and run a three-round debate between two simulated debaters",
        description="Starts the suite (unless --target is given) and runs a debate between two simulated "
        "debaters, shown live; exits 0 when it completes.",
    )
    _target(demo, starts_suite=True)
    demo.add_argument("--rounds", type=_positive, default=3, help="rounds of the debate (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=7, help="the same seed gives the same debate (default: %(default)s)")
    demo.set_defaults(handler=_demo)

    debate = sub.add_parser(
        "debate",
        help="run a debate and watch it live (Ctrl-C detaches; the debate goes on)",
        description=DEBATE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    debate.add_argument(
        "--topic", required=True, help='what the debaters argue about, e.g. "Remote work beats the office"'
    )
    debate.add_argument(
        "--debater",
        action="append",
        required=True,
        type=parse_debater,
        metavar=DEBATER_SYNTAX,
        help="repeat for each debater (2 to 8); the syntax is above",
    )
    debate.add_argument(
        "--judge", action="append", required=True, metavar="MODEL", help="the judge's model; repeat for a panel"
    )
    debate.add_argument("--rounds", type=_positive, default=3, help="rounds of the debate (default: %(default)s)")
    debate.add_argument(
        "--format",
        choices=("simultaneous", "sequential"),
        default="simultaneous",
        help="simultaneous: every debater speaks at once each round; sequential: one after another, each "
        "seeing the turns before its own (default: %(default)s)",
    )
    debate.add_argument(
        "--max-tokens-per-turn",
        type=_positive,
        metavar="N",
        help="the most tokens a debater may write in one turn; each debater is told it, and a turn cut at "
        "it is marked as cut (default: the orchestrator's, 512)",
    )
    debate.add_argument("--budget", type=parse_budget, metavar="USD", help="a spending cap, e.g. 0.50 (default: none)")
    add_stopping_flags(debate)
    add_human_flags(debate)
    debate.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the simulated models' seed: the same seed, the same debate (default: %(default)s)",
    )
    debate.add_argument(
        "--cancel-on-exit",
        action="store_true",
        help="Ctrl-C cancels the debate (default: Ctrl-C only detaches, and the debate goes on)",
    )
    add_source_flags(debate)
    _target(debate, starts_suite=True)
    debate.set_defaults(handler=_debate)

    attach = sub.add_parser(
        "attach",
        help="watch a debate by id (reconnects when the stream drops; Ctrl-C stops watching only)",
    )
    attach.add_argument("debate_id")
    attach.add_argument(
        "--after", type=int, default=0, metavar="N", help="only events after sequence N (default: from the start)"
    )
    _target(attach, starts_suite=False)
    attach.set_defaults(handler=_attach)

    listing = sub.add_parser("list", help="list debates, newest first")
    listing.add_argument(
        "--state",
        choices=[state_name(v).lower() for v in pb.DebateState.values() if v],
        help="only debates in this state",
    )
    listing.add_argument("--limit", type=_positive, default=50, help="at most this many (default: %(default)s)")
    _target(listing, starts_suite=False)
    listing.set_defaults(handler=_list)

    cancel = sub.add_parser("cancel", help="cancel a queued or running debate")
    cancel.add_argument("debate_id")
    cancel.add_argument("--reason", default="cancelled from the command line", help="kept with the debate")
    _target(cancel, starts_suite=False)
    cancel.set_defaults(handler=_cancel)


def _demo(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        out = sys.stdout
        out.write(
            "\n"
            + style.paint("Debate Engine", "bold")
            + style.paint(" · a live multi-LLM debate over gRPC", "dim")
            + "\n"
        )
        async with orchestrator(args.target, out, style, data_dir=args.data_dir, verbose=args.verbose) as stub:
            return await run_debate(stub, demo_config(args.rounds, args.seed), out, style, target=args.target)

    return run(main, target=args.target)


def _debate(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        async with orchestrator(args.target, sys.stdout, style, data_dir=args.data_dir, verbose=args.verbose) as stub:
            return await run_debate(
                stub,
                debate_config(args),
                sys.stdout,
                style,
                target=args.target,
                cancel_on_exit=args.cancel_on_exit,
            )

    return run(main, target=args.target)


def _attach(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        async with orchestrator(args.target, sys.stdout, style) as stub:
            return await watch(stub, args.debate_id, args.after, sys.stdout, style, target=args.target)

    return run(main, target=args.target)


def _list(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        state = (
            pb.DebateState.Value(f"DEBATE_STATE_{args.state.upper()}") if args.state else pb.DEBATE_STATE_UNSPECIFIED
        )
        debates: list[pb.DebateSummary] = []
        token = ""
        async with orchestrator(args.target, sys.stdout, style) as stub:
            while len(debates) < args.limit:
                page = await stub.ListDebates(
                    pb.ListDebatesRequest(page_size=min(100, args.limit - len(debates)), page_token=token, state=state),
                    timeout=30,
                )
                debates += page.debates
                token = page.next_page_token
                if not token:
                    break
        if not debates:
            print("no debates")
            return EXIT_OK
        print("\n".join(list_lines(style, debates)))
        return EXIT_OK

    return run(main, target=args.target)


def _cancel(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        async with orchestrator(args.target, sys.stdout, style) as stub:
            reply = await stub.CancelDebate(
                pb.CancelDebateRequest(debate_id=args.debate_id, reason=args.reason), timeout=30
            )
        d = reply.debate
        print(f"{d.debate_id}: {state_name(d.state).lower()}; spent {money(d.cost.amount, d.cost.currency_code)}")
        return EXIT_OK

    return run(main, target=args.target)


LIST_WIDTH = 80


def list_lines(style: Style, debates: list[pb.DebateSummary]) -> list[str]:
    """The `list` table in LIST_WIDTH columns: a row per debate (id, state, rounds played of its
    limit, cost), under it when it was created, whether a stopping rule ended it early, and its
    topic, then (when there is one) a line saying why it ended (a failed, cancelled or over-budget
    debate's end_reason) or whose human turn it awaits; each clipped to fit."""
    rows = [
        [
            d.debate_id,
            state_name(d.state).lower(),
            f"{d.stop.rounds_played if d.HasField('stop') else d.current_round}/{d.round_limit}",
            money(d.cost.amount, d.cost.currency_code),
        ]
        for d in debates
    ]
    lines = table(style, ["id", "state", "round", "cost"], rows, align="llrr")
    out = lines[:2]
    for d, row_line in zip(debates, lines[2:], strict=True):
        created = d.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M UTC") if d.HasField("create_time") else ""
        stopped = f"stopped early after round {d.stop.after_round}" if d.HasField("stop") else ""
        out += [
            row_line,
            style.paint(_clip("    " + " · ".join(x for x in (created, stopped, safe_text(d.topic)) if x)), "dim"),
        ]
        if d.end_reason:
            out.append(_clip(f"    {state_name(d.state).lower()}: {safe_text(d.end_reason)}"))
        elif d.HasField("awaiting_human"):
            seat = safe_text(d.awaiting_human.participant)
            out.append(
                _clip(
                    f"    awaits {seat}'s turn in round {d.awaiting_human.round_number}"
                    f" ({remaining(d.awaiting_human.deadline.ToNanoseconds())} left):"
                    f" debate-engine play {d.debate_id} --as {seat}"
                )
            )
    return out


def _clip(line: str) -> str:
    return clip_right(line, LIST_WIDTH - 1) + "…" if cell_len(line) > LIST_WIDTH else line
