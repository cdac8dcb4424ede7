"""gRPC transport of the orchestrator: protobuf in, domain calls, protobuf out.

StreamDebateEvents yields the event hub's responses, already serialised (the hub frames them
with transport.FRAMING); `transport.add_to_server` registers it with a pass-through
serializer, so each event is serialised once for all its subscribers.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.common.auth import current_tenant
from services.common.errors import FieldViolation, InvalidArgument
from services.common.logs import debate_id_var, request_id_var
from services.common.money import usd
from services.orchestrator.engine import Engine
from services.orchestrator.events import EventHub
from services.orchestrator.export import render as render_export
from services.orchestrator.judge_report import Thresholds, tenant_report
from services.orchestrator.run import TERMINAL
from services.orchestrator.store import DebateRow

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Export (issue 19 part 5): the wire's formats and the export module's names for them.
EXPORT_FORMATS = {pb.EXPORT_FORMAT_MARKDOWN: "md", pb.EXPORT_FORMAT_JSON: "json", pb.EXPORT_FORMAT_HTML: "html"}


def _timestamp(target, ns: int) -> None:
    target.FromNanoseconds(ns)


def _cost(row: DebateRow) -> common_pb2.Money:
    """What the debate has spent so far, as stored with it."""
    return usd(Decimal(row.cost_amount or "0"))


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, engine: Engine, hub: EventHub):
        self.engine = engine
        self.hub = hub

    # -- conversions ----------------------------------------------------------------------
    def summary(self, row: DebateRow, stops: dict[str, pb.DebateStop] | None = None) -> pb.DebateSummary:
        """`stops`: those of a page of debates, read at once (None: this debate's is read here)."""
        stop = (self.engine.stops([row.debate_id]) if stops is None else stops).get(row.debate_id)
        summary = pb.DebateSummary(
            debate_id=row.debate_id,
            topic=row.config.topic,
            state=row.state,
            current_round=row.current_round,
            round_limit=row.config.format.round_limit,
            cost=_cost(row),
            last_sequence=self.engine.last_sequence(row),
            queue_position=self.engine.queue_position(row),
            end_reason=row.end_reason,
            stop=stop,
        )
        _timestamp(summary.create_time, row.create_ns)
        _timestamp(summary.update_time, row.update_ns)
        awaiting = self.engine.human.awaiting(row)  # human seat (issue 19 part 3)
        if awaiting is not None:
            summary.awaiting_human.CopyFrom(awaiting)
        return summary

    def debate(self, row: DebateRow) -> pb.Debate:
        debate = pb.Debate(
            debate_id=row.debate_id,
            config=row.config,
            state=row.state,
            end_reason=row.end_reason,
            last_sequence=self.engine.last_sequence(row),
            stop=self.engine.stops([row.debate_id]).get(row.debate_id),
        )
        turns, assessments = self.engine.transcript(row.debate_id)
        rounds: dict[int, pb.Round] = {}
        order = {p.name: i for i, p in enumerate(row.config.participants)}
        for turn in sorted(turns, key=lambda t: (t.round_number, order.get(t.participant, 0))):
            rounds.setdefault(turn.round_number, pb.Round(round_number=turn.round_number)).turns.append(turn)
        for assessment in assessments:
            rounds.setdefault(
                assessment.round_number, pb.Round(round_number=assessment.round_number)
            ).assessment.CopyFrom(assessment)
        debate.rounds.extend(rounds[r] for r in sorted(rounds))
        if row.verdict is not None and row.verdict_recorded:
            debate.verdict.ParseFromString(row.verdict)
        debate.verdicts.extend(self.engine.verdict_versions(row))
        if row.cost is not None:
            debate.cost.ParseFromString(row.cost)
        else:
            debate.cost.debate_id = row.debate_id
            debate.cost.total.CopyFrom(_cost(row))
        _timestamp(debate.create_time, row.create_ns)
        _timestamp(debate.update_time, row.update_ns)
        debate.votes.CopyFrom(self.engine.votes.tally(row).to_proto())  # i18j: human votes
        awaiting = self.engine.human.awaiting(row)  # human seat (issue 19 part 3)
        if awaiting is not None:
            debate.awaiting_human.CopyFrom(awaiting)
        return debate

    # -- RPCs -------------------------------------------------------------------------------
    async def CreateDebate(self, request, context):
        request_id_var.set(request.request_id or "-")
        row = self.engine.create(current_tenant(), request.config, request.request_id)
        debate_id_var.set(row.debate_id)
        return pb.CreateDebateResponse(debate=self.debate(row))

    async def StartDebate(self, request, context):
        debate_id_var.set(request.debate_id)
        return pb.StartDebateResponse(debate=self.summary(self.engine.start(current_tenant(), request.debate_id)))

    async def GetDebate(self, request, context):
        debate_id_var.set(request.debate_id)
        return pb.GetDebateResponse(debate=self.debate(self.engine.get_row(current_tenant(), request.debate_id)))

    async def GetDebateStatus(self, request, context):
        row = self.engine.get_row(current_tenant(), request.debate_id)
        return pb.GetDebateStatusResponse(debate=self.summary(row))

    async def ListDebates(self, request, context):
        violations = []
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            violations.append(FieldViolation("page_size", f"must be 0 to {MAX_PAGE_SIZE}"))
        if request.state not in pb.DebateState.values():
            violations.append(FieldViolation("state", "unknown state"))
        if violations:
            raise InvalidArgument(violations)
        rows, token = self.engine.list_debates(
            current_tenant(), request.state, request.page_size or DEFAULT_PAGE_SIZE, request.page_token
        )
        stops = self.engine.stops([r.debate_id for r in rows])
        return pb.ListDebatesResponse(debates=[self.summary(r, stops) for r in rows], next_page_token=token)

    async def CancelDebate(self, request, context):
        debate_id_var.set(request.debate_id)
        row = await self.engine.cancel(current_tenant(), request.debate_id, request.reason)
        return pb.CancelDebateResponse(debate=self.summary(row))

    async def StreamDebateEvents(self, request, context):
        debate_id_var.set(request.debate_id)
        row = self.engine.get_row(current_tenant(), request.debate_id)
        frames = self.hub.subscribe(
            row.debate_id,
            request.after_sequence,
            terminal=row.state in TERMINAL,
            last_sequence=row.last_sequence,
            batch=request.batch_events,
        )
        async for frame in frames:
            yield frame

    # -- human votes, judge calibration and judge audits (i18j) ------------------------------
    async def CastVote(self, request, context):
        debate_id_var.set(request.debate_id)
        row = self.engine.get_row(current_tenant(), request.debate_id)
        tally, replaced = self.engine.votes.cast(row, request.voter, request.winner, request.tie)
        return pb.CastVoteResponse(votes=tally.to_proto(), replaced=replaced)

    async def GetJudgeReport(self, request, context):
        if request.min_votes < 0:
            raise InvalidArgument([FieldViolation("min_votes", "must be 0 (the setting) or more")])
        thresholds = Thresholds.from_settings(self.engine.settings, request.min_votes)
        reports = await tenant_report(self.engine.store, current_tenant(), thresholds)
        response = pb.GetJudgeReportResponse(
            min_votes=thresholds.min_votes,
            max_length_bias=thresholds.max_length_bias,
            max_position_bias=thresholds.max_position_bias,
            max_ordering_disagreement=thresholds.max_ordering_disagreement,
        )
        for r in reports:
            line = response.judges.add(
                judge=r.judge,
                calibration_debates=r.calibration_debates,
                calibration_agreed=r.calibration_agreed,
                calibration=r.calibration,
                ordering_disagreement=r.ordering_disagreement,
                ordering_rounds=r.ordering_rounds,
                flags=r.flags,
            )
            for target, c in ((line.length_bias, r.length_bias), (line.position_bias, r.position_bias)):
                target.rho, target.p_value, target.points = c.rho, c.p_value, c.points
        return response

    # -- Export (issue 19 part 5) -----------------------------------------------------------
    async def ExportDebate(self, request, context):
        debate_id_var.set(request.debate_id)
        fmt = EXPORT_FORMATS.get(request.format)
        if fmt is None:
            raise InvalidArgument([FieldViolation("format", "must be EXPORT_FORMAT_MARKDOWN, _JSON or _HTML")])
        debate = self.debate(self.engine.get_row(current_tenant(), request.debate_id))
        # Rendering a long debate takes milliseconds of CPU: a thread, so the loop keeps relaying tokens.
        rendered = await asyncio.to_thread(render_export, debate, fmt)
        return pb.ExportDebateResponse(
            content_type=rendered.content_type, content=rendered.content, file_name=rendered.file_name
        )

    # -- human seat (issue 19 part 3) ------------------------------------------------------
    async def SubmitTurn(self, request, context):
        debate_id_var.set(request.debate_id)
        request_id_var.set(request.request_id or "-")
        row, tokens, duplicate = self.engine.submit_turn(
            current_tenant(),
            request.debate_id,
            request.participant,
            request.round_number,
            request.text,
            request.request_id,
        )
        return pb.SubmitTurnResponse(
            debate_id=row.debate_id,
            round_number=request.round_number,
            participant=request.participant,
            completion_tokens=tokens,
            duplicate=duplicate,
        )

    # -- verdict versions (i18v) --------------------------------------------------------------
    async def RejudgeDebate(self, request, context):
        debate_id_var.set(request.debate_id)
        request_id_var.set(request.request_id or "-")
        entry, agreements = await self.engine.rejudge(
            current_tenant(), request.debate_id, request.judge, request.request_id
        )
        return pb.RejudgeDebateResponse(verdict_version=entry, agreements=agreements)

    async def ContinueDebate(self, request, context):
        debate_id_var.set(request.debate_id)
        request_id_var.set(request.request_id or "-")
        row, version = self.engine.continue_debate(
            current_tenant(), request.debate_id, request.extra_rounds, request.question, request.request_id
        )
        return pb.ContinueDebateResponse(debate=self.summary(row), verdict_version=version)
