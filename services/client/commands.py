"""The client's subcommands (demo, debate, attach, list and cancel; see services/client/__init__.py)
and the debate configurations they build from their flags."""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal, InvalidOperation

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.session import EXIT_OK, orchestrator, run, run_debate, watch
from services.client.style import Style, money, safe_text, table
from services.client.view import state_name

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
    """NAME=MODEL:PERSONA[:STANCE]; the model ends at the first ':', the stance starts at the last."""
    name, equals, rest = spec.partition("=")
    model, colon, persona = rest.partition(":")
    if not equals or not colon or not name.strip() or not model.strip() or not persona.strip():
        raise argparse.ArgumentTypeError(f"{spec!r}: expected NAME=MODEL:PERSONA[:STANCE]")
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
    return config


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
            default=os.environ.get("DEBATE_ENGINE_TARGET", "127.0.0.1:50051"),
            help="the orchestrator (default: $DEBATE_ENGINE_TARGET or 127.0.0.1:50051)",
        )


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="start the suite and run a three-round debate between two simulated debaters")
    _target(demo, starts_suite=True)
    demo.add_argument("--rounds", type=_positive, default=3)
    demo.add_argument("--seed", type=int, default=7, help="the same seed gives the same debate")
    demo.set_defaults(handler=_demo)

    debate = sub.add_parser(
        "debate",
        help="run a debate and watch it live",
        description="Runs a debate and watches it live. Models are named as LiteLLM names them "
        "(openai/gpt-4o, anthropic/...) or sim/debater, sim/judge; provider keys come "
        "from the environment of the services.",
    )
    debate.add_argument("--topic", required=True)
    debate.add_argument(
        "--debater",
        action="append",
        required=True,
        type=parse_debater,
        metavar="NAME=MODEL:PERSONA[:STANCE]",
        help="repeat for each debater (2 to 8); the model must not contain ':'",
    )
    debate.add_argument("--judge", action="append", required=True, metavar="MODEL", help="repeat for a panel")
    debate.add_argument("--rounds", type=_positive, default=3)
    debate.add_argument("--format", choices=("simultaneous", "sequential"), default="simultaneous")
    debate.add_argument("--max-tokens-per-turn", type=_positive)
    debate.add_argument("--budget", type=parse_budget, metavar="USD", help="a spending cap, e.g. 0.50")
    debate.add_argument("--seed", type=int, help="seed for the simulated models")
    _target(debate, starts_suite=True)
    debate.set_defaults(handler=_debate)

    attach = sub.add_parser("attach", help="watch a debate by id (reconnects when the stream drops)")
    attach.add_argument("debate_id")
    attach.add_argument("--after", type=int, default=0, metavar="N", help="only events after sequence N")
    _target(attach, starts_suite=False)
    attach.set_defaults(handler=_attach)

    listing = sub.add_parser("list", help="list debates, newest first")
    listing.add_argument("--state", choices=[state_name(v).lower() for v in pb.DebateState.values() if v])
    listing.add_argument("--limit", type=_positive, default=50)
    _target(listing, starts_suite=False)
    listing.set_defaults(handler=_list)

    cancel = sub.add_parser("cancel", help="cancel a queued or running debate")
    cancel.add_argument("debate_id")
    cancel.add_argument("--reason", default="cancelled from the command line")
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
            return await run_debate(stub, demo_config(args.rounds, args.seed), out, style)

    return run(main)


def _debate(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        async with orchestrator(args.target, sys.stdout, style, data_dir=args.data_dir, verbose=args.verbose) as stub:
            return await run_debate(stub, debate_config(args), sys.stdout, style)

    return run(main)


def _attach(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        async with orchestrator(args.target, sys.stdout, style) as stub:
            return await watch(stub, args.debate_id, args.after, sys.stdout, style)

    return run(main)


def _list(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        state = (
            pb.DebateState.Value(f"DEBATE_STATE_{args.state.upper()}") if args.state else pb.DEBATE_STATE_UNSPECIFIED
        )
        rows: list[list[str]] = []
        token = ""
        async with orchestrator(args.target, sys.stdout, style) as stub:
            while len(rows) < args.limit:
                page = await stub.ListDebates(
                    pb.ListDebatesRequest(page_size=min(100, args.limit - len(rows)), page_token=token, state=state),
                    timeout=30,
                )
                rows += [
                    [
                        d.debate_id,
                        state_name(d.state).lower(),
                        f"{d.current_round}/{d.round_limit}",
                        money(d.cost.amount, d.cost.currency_code),
                        d.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if d.HasField("create_time") else "",
                        _clip(safe_text(d.topic), 48),
                    ]
                    for d in page.debates
                ]
                token = page.next_page_token
                if not token:
                    break
        if not rows:
            print("no debates")
            return EXIT_OK
        print("\n".join(table(style, ["id", "state", "round", "cost", "created (UTC)", "topic"], rows, align="llrrll")))
        return EXIT_OK

    return run(main)


def _cancel(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        async with orchestrator(args.target, sys.stdout, style) as stub:
            reply = await stub.CancelDebate(
                pb.CancelDebateRequest(debate_id=args.debate_id, reason=args.reason), timeout=30
            )
        d = reply.debate
        print(f"{d.debate_id}: {state_name(d.state).lower()}; spent {money(d.cost.amount, d.cost.currency_code)}")
        return EXIT_OK

    return run(main)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
