"""gRPC transport of the judge: protobuf in, domain calls, protobuf out.

Errors are raised as DomainErrors and mapped to statuses by the shared interceptor. A request
that failed after making model calls carries them as a `judge.v1.BilledCalls` status detail
(after the ErrorInfo), so the caller can record every call the provider billed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import TypeVar

from debate.common.v1 import common_pb2
from debate.judge.v1 import judge_pb2, judge_pb2_grpc

from services.common.logs import debate_id_var, request_id_var
from services.common.quotes import status_name
from services.common.usage import usage_to_proto
from services.judge.engine import Judge, JudgeModelFailed, JudgeOutputInvalid
from services.judge.model import (
    Criterion,
    Debater,
    JudgeCall,
    PanelRequest,
    PriorAssessment,
    QuoteCheck,
    Round,
    RoundAssessment,
    RoundCase,
    Source,
    Turn,
    Verdict,
    VerdictCase,
)

Result = TypeVar("Result")


async def _with_billed_calls(work: Awaitable[Result]) -> Result:
    """`work`'s result; a failure that made model calls gets them as a BilledCalls detail."""
    try:
        return await work
    except (JudgeOutputInvalid, JudgeModelFailed) as error:
        if error.billed_calls:
            error.details.append(judge_pb2.BilledCalls(calls=_calls(error.billed_calls)))
        raise


class JudgeServicer(judge_pb2_grpc.JudgeServiceServicer):
    def __init__(self, judge: Judge):
        self.judge = judge

    async def EvaluateRound(self, request: judge_pb2.EvaluateRoundRequest, context) -> judge_pb2.EvaluateRoundResponse:
        _set_log_context(request.debate_id, request.request_id)
        assessment = await _with_billed_calls(
            self.judge.evaluate_round(
                RoundCase(
                    debate_id=request.debate_id,
                    topic=request.topic,
                    round_number=request.round_number,
                    debaters=_debaters(request.debaters),
                    turns=_turns(request.turns),
                    panel=_panel(request.judge),
                    request_id=request.request_id,
                    seed=request.seed or None,
                    sources=_sources(request.sources),
                    assess_consensus=request.assess_consensus,
                )
            )
        )
        return judge_pb2.EvaluateRoundResponse(assessment=assessment_to_proto(assessment))

    async def RenderVerdict(self, request: judge_pb2.RenderVerdictRequest, context) -> judge_pb2.RenderVerdictResponse:
        _set_log_context(request.debate_id, request.request_id)
        verdict = await _with_billed_calls(
            self.judge.render_verdict(
                VerdictCase(
                    debate_id=request.debate_id,
                    topic=request.topic,
                    debaters=_debaters(request.debaters),
                    rounds=tuple(Round(r.round_number, _turns(r.turns)) for r in request.rounds),
                    assessments=tuple(
                        PriorAssessment(a.round_number, {s.debater: s.weighted_total for s in a.scores})
                        for a in request.assessments
                    ),
                    panel=_panel(request.judge),
                    request_id=request.request_id,
                    seed=request.seed or None,
                    sources=_sources(request.sources),
                )
            )
        )
        return judge_pb2.RenderVerdictResponse(verdict=verdict_to_proto(verdict))


def _set_log_context(debate_id: str, request_id: str) -> None:
    debate_id_var.set(debate_id or "-")
    request_id_var.set(request_id or "-")


def _debaters(debaters: Iterable[judge_pb2.Debater]) -> tuple[Debater, ...]:
    return tuple(Debater(d.name, d.stance, d.persona) for d in debaters)


def _turns(turns: Iterable[judge_pb2.DebaterTurn]) -> tuple[Turn, ...]:
    return tuple(
        Turn(
            t.debater,
            t.text,
            tuple(QuoteCheck(q.text, q.source_id, status_name(q.status), q.score, q.best_match) for q in t.quotes),
        )
        for t in turns
    )


def _sources(sources: Iterable[common_pb2.SourceDocument]) -> tuple[Source, ...]:
    return tuple(Source(s.id, s.title, s.text) for s in sources)


def _panel(config: common_pb2.JudgeConfig) -> PanelRequest:
    return PanelRequest(
        models=tuple(config.models),
        orderings=config.orderings,
        criteria=tuple(Criterion(c.name, c.weight, c.description) for c in config.rubric.criteria),
    )


def _calls(calls: Iterable[JudgeCall]) -> list[common_pb2.JudgeCall]:
    return [
        common_pb2.JudgeCall(
            model=c.model,
            ordering=list(c.ordering),
            usage=usage_to_proto(c.usage),
            attempts=c.attempts,
            request_id=c.request_id,
            simulated=c.simulated,
            attempt=c.attempt,
            accepted=c.accepted,
            totals=c.totals,
        )
        for c in calls
    ]


def assessment_to_proto(a: RoundAssessment) -> common_pb2.RoundAssessment:
    return common_pb2.RoundAssessment(
        round_number=a.round_number,
        scores=[
            common_pb2.DebaterScore(
                debater=s.debater,
                criteria=[common_pb2.CriterionScore(criterion=name, score=score) for name, score in s.criteria.items()],
                weighted_total=s.weighted_total,
                rationale=s.rationale,
            )
            for s in a.scores
        ],
        leader=a.leader,
        tie=a.tie,
        rationale=a.rationale,
        judge_models=list(a.judge_models),
        ordering_agreement=a.ordering_agreement,
        judge_agreement=a.judge_agreement,
        calls=_calls(a.calls),
        simulated=a.simulated,
        confidence=a.confidence,
        consensus=a.consensus,
    )


def verdict_to_proto(v: Verdict) -> common_pb2.Verdict:
    return common_pb2.Verdict(
        winner=v.winner,
        tie=v.tie,
        final_scores=[common_pb2.FinalScore(debater=name, score=score) for name, score in v.final_scores.items()],
        confidence=v.confidence,
        summary=v.summary,
        judge_models=list(v.judge_models),
        ordering_agreement=v.ordering_agreement,
        judge_agreement=v.judge_agreement,
        calls=_calls(v.calls),
        simulated=v.simulated,
    )
