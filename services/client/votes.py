"""`debate-engine vote` and `debate-engine audit`: human votes, and the judges' calibration and
audits (issue 18 parts 4 and 5), from the terminal.

    debate-engine vote ID CHOICE [--voter NAME]   CHOICE: a participant's name, or "tie"
    debate-engine audit [--min-votes N]

The voter is --voter, else $DEBATE_ENGINE_VOTER, else the login name: the service counts one
vote per voter per debate, and a repeated vote replaces the earlier one.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.session import DEFAULT_TARGET, EXIT_OK, default_target, orchestrator, run
from services.client.style import Style, safe_text, table
from services.common.text import plural

TIE_CHOICE = "tie"


def default_voter() -> str:
    """$DEBATE_ENGINE_VOTER, else the login name (else "cli")."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "cli"
    return os.environ.get("DEBATE_ENGINE_VOTER") or login


def tally_lines(style: Style, tally: pb.VoteTally) -> list[str]:
    """The votes of each choice, and the majority (if any)."""
    rows = [[safe_text("(tie)" if c.tie else c.winner), str(c.votes)] for c in tally.counts]
    lines = table(style, ["choice", "votes"], rows)
    if tally.has_majority:
        majority = "a tie" if tally.majority_tie else safe_text(tally.majority_winner)
        lines.append(f"  {plural(tally.voters, 'voter')}; majority: {majority}")
    else:
        lines.append(f"  {plural(tally.voters, 'voter')}; no majority")
    return lines


def _bias(c: pb.Correlation) -> str:
    return f"{c.rho:+.2f} (p {c.p_value:.3f}, {plural(c.points, 'round')})" if c.points else "-"


def report_lines(style: Style, report: pb.GetJudgeReportResponse) -> list[str]:
    """The calibration and audit table of a judge report, and the thresholds it used."""
    rows = []
    for j in report.judges:
        calibration = f"{j.calibration:.0%} of {j.calibration_debates}" if j.calibration_debates else "-"
        ordering = f"{j.ordering_disagreement:.2f} ({plural(j.ordering_rounds, 'round')})" if j.ordering_rounds else "-"
        flags = ", ".join(j.flags) or "ok"
        rows.append([safe_text(j.judge), calibration, _bias(j.length_bias), _bias(j.position_bias), ordering, flags])
    if not rows:
        return ["no judged debates"]
    lines = table(
        style,
        ["judge", "agrees with humans", "length bias", "position bias", "orderings disagree", "flags"],
        rows,
        align="llllll",
    )
    lines.append(
        f"  calibration: completed debates with at least {report.min_votes} votes and a strict majority; flagged "
        f"past |length| {report.max_length_bias:g}, |position| {report.max_position_bias:g}, "
        f"ordering disagreement {report.max_ordering_disagreement:g}"
    )
    return lines


def register(sub: argparse._SubParsersAction) -> None:
    vote = sub.add_parser(
        "vote",
        help="vote for a debate's winner (or a tie)",
        description="Casts your vote on a running or completed debate: a participant's name, or 'tie'. "
        "One vote per voter per debate; voting again replaces your vote.",
    )
    vote.add_argument("debate_id")
    vote.add_argument("choice", help="a participant's name, or 'tie'")
    vote.add_argument("--voter", default=None, help="who votes (default: $DEBATE_ENGINE_VOTER or your login name)")
    vote.add_argument(
        "--target", metavar="HOST:PORT", default=default_target(), help=f"the orchestrator (default: {DEFAULT_TARGET})"
    )
    vote.set_defaults(handler=_vote)

    audit = sub.add_parser(
        "audit",
        help="the judges' calibration against human votes, and their length and position biases",
    )
    audit.add_argument(
        "--min-votes",
        type=int,
        default=0,
        help="votes a debate needs to count for calibration (default: the service's)",
    )
    audit.add_argument(
        "--target", metavar="HOST:PORT", default=default_target(), help=f"the orchestrator (default: {DEFAULT_TARGET})"
    )
    audit.set_defaults(handler=_audit)


def _vote(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        tie = args.choice == TIE_CHOICE
        request = pb.CastVoteRequest(
            debate_id=args.debate_id,
            voter=args.voter or default_voter(),
            winner="" if tie else args.choice,
            tie=tie,
        )
        async with orchestrator(args.target, sys.stdout, style) as stub:
            reply = await stub.CastVote(request, timeout=30)
        print(f"{request.voter}: vote {'replaced' if reply.replaced else 'cast'} on {args.debate_id}")
        print("\n".join(tally_lines(style, reply.votes)))
        return EXIT_OK

    return run(main, target=args.target)


def _audit(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        async with orchestrator(args.target, sys.stdout, style) as stub:
            report = await stub.GetJudgeReport(pb.GetJudgeReportRequest(min_votes=args.min_votes), timeout=60)
        print("\n".join(report_lines(style, report)))
        return EXIT_OK

    return run(main, target=args.target)
