"""Verdict versions from the terminal: `debate-engine rejudge ID --judge MODEL...` and
`debate-engine continue ID --rounds N [--question Q]`, and the verdict history (a table of a
debate's versions) that they, and the live view of a debate (view.py), show.

`rejudge` asks for a new verdict of a completed debate by another judge (a panel of models,
the orderings each sees), waits for it, and prints it with the history: each version's reason,
winner, confidence, judge, agreement with version 1 and cost. `continue` adds rounds (with an
optional follow-up question), then watches them live to the new verdict as `attach` would,
from the continuation on. Both send a request_id (a new one per command unless given with
--request-id), so a retried command acts once.
"""

from __future__ import annotations

import argparse
import sys
import uuid

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.commands import _positive, _target
from services.client.session import EXIT_OK, orchestrator, run, watch
from services.client.style import Style
from services.client.verdict_history import agreement_text, history_lines, judge_text, version_lines


# -- commands ---------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    rejudge = sub.add_parser(
        "rejudge",
        help="judge a completed debate again with another judge (a new verdict version; no debater is called)",
    )
    rejudge.add_argument("debate_id")
    rejudge.add_argument(
        "--judge", action="append", required=True, metavar="MODEL", help="the judge's model; repeat for a panel"
    )
    rejudge.add_argument(
        "--orderings", type=_positive, metavar="N", help="orderings of the debaters each judge model sees"
    )
    rejudge.add_argument("--request-id", help="idempotency key: the same one again acts once (default: a new one)")
    _target(rejudge, starts_suite=False)
    rejudge.set_defaults(handler=_rejudge)

    more = sub.add_parser("continue", help="add rounds to a completed debate and watch them to a new verdict")
    more.add_argument("debate_id")
    more.add_argument("--rounds", type=_positive, required=True, metavar="N", help="rounds to add")
    more.add_argument("--question", default="", help="a follow-up question put to the debaters in the added rounds")
    more.add_argument("--request-id", help="idempotency key: the same one again acts once (default: a new one)")
    _target(more, starts_suite=False)
    more.set_defaults(handler=_continue)


def _rejudge(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        judge = common_pb2.JudgeConfig(models=args.judge, orderings=args.orderings or 0)
        request = pb.RejudgeDebateRequest(
            debate_id=args.debate_id, judge=judge, request_id=args.request_id or str(uuid.uuid4())
        )
        async with orchestrator(args.target, sys.stdout, style) as stub:
            print(style.paint(f"re-judging {args.debate_id} with {judge_text(judge)} ...", "dim"), flush=True)
            reply = await stub.RejudgeDebate(request, timeout=600)
            debate = (await stub.GetDebate(pb.GetDebateRequest(debate_id=args.debate_id), timeout=30)).debate
        print("\n".join(version_lines(style, reply.verdict_version)))
        for agreement in reply.agreements:
            if agreement.version == 1 and reply.verdict_version.HasField("agreement"):
                continue  # version_lines said it already
            print(f"  against version {agreement.version}: {agreement_text(agreement)}")
        print("\n".join(history_lines(style, debate.verdicts)))
        return EXIT_OK

    return run(main, target=args.target)


def _continue(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        async with orchestrator(args.target, sys.stdout, style) as stub:
            before = (await stub.GetDebate(pb.GetDebateRequest(debate_id=args.debate_id), timeout=30)).debate
            reply = await stub.ContinueDebate(
                pb.ContinueDebateRequest(
                    debate_id=args.debate_id,
                    extra_rounds=args.rounds,
                    question=args.question,
                    request_id=args.request_id or str(uuid.uuid4()),
                ),
                timeout=30,
            )
            print(
                style.paint(
                    f"continuing {args.debate_id}: rounds {before.config.format.round_limit + 1} to "
                    f"{reply.debate.round_limit}, then verdict version {reply.verdict_version}",
                    "dim",
                ),
                flush=True,
            )
            code = await watch(stub, args.debate_id, before.last_sequence, sys.stdout, style, target=args.target)
            after = (await stub.GetDebate(pb.GetDebateRequest(debate_id=args.debate_id), timeout=30)).debate
        print("\n".join(history_lines(style, after.verdicts)))
        return code

    return run(main, target=args.target)
