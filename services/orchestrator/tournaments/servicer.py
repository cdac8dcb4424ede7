"""gRPC transport of tournaments (debate.orchestrator.v1.TournamentService): protobuf in, calls
to `services.orchestrator.tournaments.runner.Tournaments`, protobuf out. Errors are the domain's
typed errors, mapped to a status by the service's interceptor."""

from __future__ import annotations

from debate.orchestrator.v1 import tournament_pb2 as tpb
from debate.orchestrator.v1 import tournament_pb2_grpc

from services.common.auth import current_tenant
from services.common.errors import FieldViolation, InvalidArgument
from services.common.logs import request_id_var
from services.common.money import usd
from services.orchestrator.tournaments.ratings import ModelRating
from services.orchestrator.tournaments.records import M, TournamentRow
from services.orchestrator.tournaments.runner import Tournaments

SERVICE_NAME = tpb.DESCRIPTOR.services_by_name["TournamentService"].full_name
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def summary(row: TournamentRow, matches: list[tpb.Match]) -> tpb.TournamentSummary:
    out = tpb.TournamentSummary(
        tournament_id=row.tournament_id,
        name=row.config.name,
        state=row.state,
        models=list(row.config.models),
        matches_total=len(matches),
        matches_decided=sum(m.state == M.MATCH_STATE_DECIDED for m in matches),
        matches_running=sum(m.state == M.MATCH_STATE_RUNNING for m in matches),
    )
    out.create_time.FromNanoseconds(row.create_ns)
    return out


def rating_message(r: ModelRating) -> tpb.Rating:
    return tpb.Rating(
        model=r.model,
        rating=r.rating,
        rating_low=r.low,
        rating_high=r.high,
        matches=r.matches,
        wins=r.wins,
        losses=r.losses,
        ties=r.ties,
        rank=r.rank,
    )


class TournamentServicer(tournament_pb2_grpc.TournamentServiceServicer):
    def __init__(self, tournaments: Tournaments):
        self.tournaments = tournaments

    async def tournament(self, row: TournamentRow) -> tpb.Tournament:
        matches = self.tournaments.matches(row.tournament_id)
        cost = await self.tournaments.cost(matches)
        for match in matches:
            match.cost.CopyFrom(usd(cost.by_match.get(match.match_index, 0)))
        ratings, _ = await self.tournaments.ratings(row.tenant, row.tournament_id)
        progress = summary(row, matches)
        out = tpb.Tournament(
            tournament_id=row.tournament_id,
            config=row.config,
            state=row.state,
            end_reason=row.end_reason,
            matches=matches,
            cost=usd(cost.total),
            usage=cost.usage,
            cost_by_model=cost.by_model,
            matches_total=progress.matches_total,
            matches_decided=progress.matches_decided,
            matches_running=progress.matches_running,
            ratings=[rating_message(r) for r in ratings],
        )
        out.create_time.FromNanoseconds(row.create_ns)
        out.update_time.FromNanoseconds(row.update_ns)
        return out

    async def CreateTournament(self, request, context):
        request_id_var.set(request.request_id or "-")
        row = self.tournaments.create(current_tenant(), request.config, request.request_id)
        return tpb.CreateTournamentResponse(tournament=await self.tournament(row))

    async def StartTournament(self, request, context):
        row = self.tournaments.start(current_tenant(), request.tournament_id)
        return tpb.StartTournamentResponse(tournament=summary(row, self.tournaments.matches(row.tournament_id)))

    async def GetTournament(self, request, context):
        row = self.tournaments.get_row(current_tenant(), request.tournament_id)
        return tpb.GetTournamentResponse(tournament=await self.tournament(row))

    async def ListTournaments(self, request, context):
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument([FieldViolation("page_size", f"must be 0 to {MAX_PAGE_SIZE}")])
        rows, token = self.tournaments.list_page(
            current_tenant(), request.page_size or DEFAULT_PAGE_SIZE, request.page_token
        )
        return tpb.ListTournamentsResponse(
            tournaments=[summary(r, self.tournaments.matches(r.tournament_id)) for r in rows], next_page_token=token
        )

    async def CancelTournament(self, request, context):
        row = await self.tournaments.cancel(current_tenant(), request.tournament_id, request.reason)
        return tpb.CancelTournamentResponse(tournament=summary(row, self.tournaments.matches(row.tournament_id)))

    async def StreamTournamentEvents(self, request, context):
        async for row, changed in self.tournaments.watch(current_tenant(), request.tournament_id):
            progress = summary(row, self.tournaments.matches(row.tournament_id))
            yield tpb.StreamTournamentEventsResponse(progress=progress, matches=changed)

    async def GetLeaderboard(self, request, context):
        ratings, matches = await self.tournaments.ratings(current_tenant(), request.tournament_id)
        return tpb.GetLeaderboardResponse(
            ratings=[rating_message(r) for r in ratings], matches=matches, method=self.tournaments.method
        )
