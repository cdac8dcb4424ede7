"""`debate-engine tournament create|start|get|list|cancel|watch` and `debate-engine leaderboard`:
tournaments of side-swapped matches and their Bradley-Terry ratings, from the terminal, against
a running orchestrator (--target, or $DEBATE_ENGINE_TARGET)."""

from __future__ import annotations

import argparse
import sys

from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import tournament_pb2 as tpb
from debate.orchestrator.v1 import tournament_pb2_grpc

from services.client.commands import _target as target
from services.client.commands import parse_budget
from services.client.session import _channel, run
from services.client.style import Style, safe_text
from services.client.view import state_name

EXIT_OK = 0
T = tpb.TournamentState
M = tpb.MatchState


def _state(value: int, enum=T) -> str:
    name = enum.Name(value)
    return name.split("_STATE_", 1)[1].lower().replace("_", " ")


def summary_line(s: tpb.TournamentSummary) -> str:
    return (
        f"{s.tournament_id}  {_state(s.state):<16} {s.matches_decided}/{s.matches_total} decided"
        f" ({s.matches_running} running)  {s.name or ', '.join(s.models)}"
    )


MATCH_LEGEND = (
    "each match: two debates on its topic, leg 1 with the first-named model for the motion, leg 2 with"
    " the sides swapped; margin = the winner's final score minus the loser's (0-10 scale), over both legs"
    " for the match"
)


def _result(winner: str, tie: bool, margin: float, model_a: str, model_b: str) -> str:
    """ "sim/a wins by 0.80", "tie" or "" (not decided), the margin said from the winner's side
    (`margin` is model_a's score minus model_b's)."""
    if tie:
        if not margin:
            return "tie"
        return f"tie ({model_a if margin > 0 else model_b} ahead by {abs(margin):.2f})"
    if not winner:
        return ""
    own = margin if winner == model_a else -margin
    if own >= 0:
        return f"{winner} wins by {own:.2f}"
    return f"{winner} wins on debates won (behind by {-own:.2f} on margin)"


def match_lines(m: tpb.Match) -> list[str]:
    """A match in a line (its models, state, result and topic), then a line for each leg: who argued
    for and against, and that debate's result (or state) and id. Margins are said as whose they are
    (the proto's are model_a's minus model_b's)."""
    head = f"  #{m.match_index:<3} {m.model_a} v {m.model_b}  [{_state(m.state, M)}]"
    result = _result(m.winner_model, m.tie, m.margin, m.model_a, m.model_b)
    lines = [f"{head}{'  ' + result if result else ''}  · topic: {safe_text(m.topic)}"]
    for number, leg in enumerate(m.legs, 1):
        against = m.model_b if leg.for_model == m.model_a else m.model_a
        outcome = (
            _result(leg.winner_model, leg.tie, leg.margin, m.model_a, m.model_b) or state_name(leg.debate_state).lower()
        )
        lines.append(
            f"       leg {number}: {leg.for_model} for, {against} against: {outcome}  (debate {leg.debate_id})"
        )
    return lines


def rating_lines(ratings, matches: int | None = None) -> list[str]:
    lines = [f"{'rank':<5}{'model':<32}{'rating':>8}  {'95% interval':<17}{'W-L-T':>9}"]
    for r in ratings:
        lines.append(
            f"{r.rank:<5}{r.model:<32}{r.rating:>8.0f}  [{r.rating_low:>6.0f}, {r.rating_high:>6.0f}]"
            f"{f'{r.wins}-{r.losses}-{r.ties}':>9}"
        )
    if matches is not None:
        lines.append(f"{matches} decided matches")
    return lines


def tournament_lines(t: tpb.Tournament) -> list[str]:
    lines = [
        f"tournament {t.tournament_id}: {_state(t.state)}" + (f" ({t.end_reason})" if t.end_reason else ""),
        f"models: {', '.join(t.config.models)}; topics: {len(t.config.topics)}; "
        f"{t.matches_decided}/{t.matches_total} matches decided",
        f"cost: {t.cost.amount or '0'} {t.cost.currency_code or 'USD'}, {t.usage.total_tokens} tokens",
    ]
    lines += [
        f"  {line.key}: {line.cost.amount or '0'} USD, {line.usage.total_tokens} tokens" for line in t.cost_by_model
    ]
    if t.matches:
        lines.append(MATCH_LEGEND)
    lines += [line for m in t.matches for line in match_lines(m)]
    if t.ratings:
        lines += rating_lines(t.ratings)
    return lines


def _config(args: argparse.Namespace) -> tpb.TournamentConfig:
    config = tpb.TournamentConfig(
        name=args.name,
        models=args.model,
        topics=args.topic,
        format=c.DebateFormat(round_limit=args.rounds),
        judge=c.JudgeConfig(models=args.judge or ["sim/judge"]),
        max_tokens_per_turn=args.max_tokens_per_turn,
        seed=args.seed,
        parallel_matches=args.parallel,
    )
    if args.budget:
        config.budget.CopyFrom(parse_budget(args.budget))
    if args.debate_budget:
        config.debate_budget.CopyFrom(parse_budget(args.debate_budget))
    return config


def _call(args: argparse.Namespace, action) -> int:
    async def main(style: Style) -> int:
        async with _channel(args.target) as channel:
            return await action(tournament_pb2_grpc.TournamentServiceStub(channel))

    return run(main, target=args.target)


def _create(args: argparse.Namespace) -> int:
    async def action(stub) -> int:
        request = tpb.CreateTournamentRequest(config=_config(args), request_id=args.request_id)
        t = (await stub.CreateTournament(request, timeout=30)).tournament
        print(f"created tournament {t.tournament_id}: {t.matches_total} matches, {2 * t.matches_total} debates")
        if args.start:
            started = await stub.StartTournament(tpb.StartTournamentRequest(tournament_id=t.tournament_id), timeout=30)
            print(summary_line(started.tournament))
        return EXIT_OK

    return _call(args, action)


def _start(args: argparse.Namespace) -> int:
    async def action(stub) -> int:
        reply = await stub.StartTournament(tpb.StartTournamentRequest(tournament_id=args.tournament_id), timeout=30)
        print(summary_line(reply.tournament))
        return EXIT_OK

    return _call(args, action)


def _get(args: argparse.Namespace) -> int:
    async def action(stub) -> int:
        reply = await stub.GetTournament(tpb.GetTournamentRequest(tournament_id=args.tournament_id), timeout=60)
        print("\n".join(tournament_lines(reply.tournament)))
        return EXIT_OK

    return _call(args, action)


def _list(args: argparse.Namespace) -> int:
    async def action(stub) -> int:
        reply = await stub.ListTournaments(tpb.ListTournamentsRequest(page_size=args.limit), timeout=30)
        print("\n".join(summary_line(s) for s in reply.tournaments) or "no tournaments")
        return EXIT_OK

    return _call(args, action)


def _cancel(args: argparse.Namespace) -> int:
    async def action(stub) -> int:
        request = tpb.CancelTournamentRequest(tournament_id=args.tournament_id, reason=args.reason)
        print(summary_line((await stub.CancelTournament(request, timeout=30)).tournament))
        return EXIT_OK

    return _call(args, action)


def _watch(args: argparse.Namespace) -> int:
    async def action(stub) -> int:
        request = tpb.StreamTournamentEventsRequest(tournament_id=args.tournament_id)
        print(MATCH_LEGEND)
        async for message in stub.StreamTournamentEvents(request):
            print(summary_line(message.progress))
            for match in message.matches:
                if match.state in (M.MATCH_STATE_DECIDED, M.MATCH_STATE_FAILED, M.MATCH_STATE_RUNNING):
                    print("\n".join(match_lines(match)))
            sys.stdout.flush()
        # the stream ends with the tournament: its ratings, as `get` shows them
        got = await stub.GetTournament(tpb.GetTournamentRequest(tournament_id=args.tournament_id), timeout=60)
        print("\n".join(rating_lines(got.tournament.ratings)) if got.tournament.ratings else "no decided matches")
        return EXIT_OK

    return _call(args, action)


def _leaderboard(args: argparse.Namespace) -> int:
    async def action(stub) -> int:
        reply = await stub.GetLeaderboard(tpb.GetLeaderboardRequest(tournament_id=args.tournament), timeout=60)
        if not reply.ratings:
            print("no decided matches yet")
            return EXIT_OK
        print("\n".join(rating_lines(reply.ratings, reply.matches)))
        print(reply.method)
        return EXIT_OK

    return _call(args, action)


def _target(parser: argparse.ArgumentParser) -> None:
    target(parser, starts_suite=False)  # --target, as the other commands take it


def register(sub: argparse._SubParsersAction) -> None:
    tournament = sub.add_parser("tournament", help="round robins of side-swapped matches between models")
    actions = tournament.add_subparsers(dest="tournament_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a tournament (and --start it)")
    create.add_argument("--model", action="append", required=True, help="a model; give 2 to 8")
    create.add_argument("--topic", action="append", required=True, help="a topic; give 1 to 20")
    create.add_argument("--judge", action="append", help="a judge model; repeat for a panel (default: sim/judge)")
    create.add_argument("--rounds", type=int, default=1, help="rounds of each debate (default: %(default)s)")
    create.add_argument("--budget", default="", help="the tournament's cap in USD, e.g. 2.50")
    create.add_argument("--debate-budget", default="", help="each debate's cap in USD (default: budget / debates)")
    create.add_argument("--max-tokens-per-turn", type=int, default=0, help="each turn's cap (0: the service's)")
    create.add_argument("--seed", type=int, default=0, help="match i's debates use seed + i")
    create.add_argument("--parallel", type=int, default=1, help="matches played at once (default: %(default)s)")
    create.add_argument("--name", default="", help="a label")
    create.add_argument("--request-id", default="", help="idempotency key: a retry creates nothing new")
    create.add_argument("--start", action="store_true", help="start it at once")
    _target(create)
    create.set_defaults(handler=_create)

    for name, handler, text in (
        ("start", _start, "start a created tournament"),
        ("get", _get, "a tournament: matches, results, cost by model, ratings"),
        ("watch", _watch, "follow a tournament's progress until it ends"),
    ):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("tournament_id")
        _target(parser)
        parser.set_defaults(handler=handler)

    listing = actions.add_parser("list", help="your tournaments, newest first")
    listing.add_argument("--limit", type=int, default=20, help="at most this many, 1 to 100 (default: %(default)s)")
    _target(listing)
    listing.set_defaults(handler=_list)

    cancel = actions.add_parser("cancel", help="cancel a tournament: its debates under way are cancelled")
    cancel.add_argument("tournament_id")
    cancel.add_argument("--reason", default="cancelled from the command line")
    _target(cancel)
    cancel.set_defaults(handler=_cancel)

    board = sub.add_parser("leaderboard", help="Bradley-Terry ratings with 95%% intervals, from tournaments")
    board.add_argument("--tournament", default="", help="one tournament's (default: all of yours)")
    _target(board)
    board.set_defaults(handler=_leaderboard)
