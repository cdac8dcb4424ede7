"""gRPC transport of the accounting service: protobuf in, domain calls, protobuf out.

Domain errors (InvalidArgument with field violations, ModelNotPriced, ...) are raised by
the domain and turned into rich statuses by the shared interceptor.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from debate.accounting.v1 import accounting_pb2, accounting_pb2_grpc
from debate.common.v1 import common_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2

from services.accounting.breakdown import Line
from services.accounting.estimate import DebatePlan, DebaterPlan
from services.accounting.ledger import Accounting, DebateCostReport, ReserveRequest, UsageRequest
from services.accounting.store import Budget, ReserveResult, Role, UsageRow
from services.common.errors import DomainError, InvalidArgument, Violations
from services.common.money import read_money, usd
from services.common.pricing import ModelPrice, per_million
from services.common.usage import usage_from_proto, usage_to_proto

_ROLE_FROM_PB = {
    common_pb2.ROLE_DEBATER: Role.DEBATER,
    common_pb2.ROLE_JUDGE: Role.JUDGE,
    common_pb2.ROLE_VERDICT: Role.VERDICT,
}
_ROLE_TO_PB = {role: pb for pb, role in _ROLE_FROM_PB.items()}

log = logging.getLogger(__name__)


def price_to_pb(price: ModelPrice) -> accounting_pb2.ModelPrice:
    r = price.rates
    return accounting_pb2.ModelPrice(
        model=price.model,
        input_per_million=per_million(r.input),
        output_per_million=per_million(r.output),
        cached_input_per_million=per_million(r.cached_input),
        reasoning_per_million=per_million(r.reasoning),
        source=price.source,
        cache_creation_input_per_million=per_million(r.cache_creation_input),
    )


def line_to_pb(line: Line, price_source: str = "") -> common_pb2.CostLine:
    return common_pb2.CostLine(
        key=line.key,
        usage=usage_to_proto(line.usage, estimated=line.estimated),
        cost=usd(line.cost),
        calls=line.calls,
        price_source=price_source,
    )


def budget_to_pb(budget: Budget) -> common_pb2.BudgetStatus:
    pb = common_pb2.BudgetStatus(spent=usd(budget.spent), reserved=usd(budget.reserved))
    if budget.cap is not None:
        pb.cap.CopyFrom(usd(budget.cap))
    if budget.remaining is not None:  # set exactly when the cap is
        pb.remaining.CopyFrom(usd(budget.remaining))
    return pb


def record_to_pb(row: UsageRow) -> accounting_pb2.UsageRecord:
    record_time = Timestamp()
    record_time.FromNanoseconds(row.record_time_ns)
    return accounting_pb2.UsageRecord(
        request_id=row.request_id,
        debate_id=row.debate_id,
        participant=row.participant,
        role=_ROLE_TO_PB[row.role],
        round_number=row.round_number,
        model=row.model,
        attempt=row.attempt,
        usage=usage_to_proto(row.usage, estimated=row.estimated),
        cost=usd(row.cost),
        record_time=record_time,
    )


def usage_request_from_pb(request: accounting_pb2.RecordUsageRequest) -> UsageRequest:
    return UsageRequest(
        request_id=request.request_id,
        debate_id=request.debate_id,
        participant=request.participant,
        role=_ROLE_FROM_PB.get(request.role),
        round_number=request.round_number,
        model=request.model,
        attempt=request.attempt,
        usage=usage_from_proto(request.usage),
        total_tokens=request.usage.total_tokens,
        estimated=request.usage.estimated,
        reservation_id=request.reservation_id,
    )


def item_error_to_pb(error: Exception) -> accounting_pb2.ItemError:
    """The status a call of its own would have ended with (services.common.grpc_errors.status_for):
    a DomainError's code, message, reason, metadata and field violations; anything else is logged
    and answered as a bare INTERNAL, as the domain-error interceptor does."""
    if not isinstance(error, DomainError):
        log.error("unexpected error in an item of a batch", exc_info=error)
        error = DomainError("internal error; see the service log")
    item = accounting_pb2.ItemError(
        code=getattr(code_pb2, error.code), message=error.message, reason=error.reason, metadata=error.metadata
    )
    if isinstance(error, InvalidArgument):
        item.field_violations.extend(
            accounting_pb2.FieldViolation(field=v.field, description=v.description) for v in error.violations
        )
    return item


def reserve_request_from_pb(request: accounting_pb2.ReserveBudgetRequest) -> ReserveRequest:
    return ReserveRequest(
        reservation_id=request.reservation_id,
        debate_id=request.debate_id,
        model=request.model,
        prompt_tokens=request.prompt_tokens,
        max_completion_tokens=request.max_completion_tokens,
    )


def reserve_to_pb(result: ReserveResult) -> accounting_pb2.ReserveBudgetResponse:
    reply = accounting_pb2.ReserveBudgetResponse(
        granted=result.granted, amount=usd(result.amount), budget=budget_to_pb(result.budget)
    )
    if result.budget.remaining is not None:
        reply.remaining.CopyFrom(usd(result.budget.remaining))
    return reply


def plan_from_pb(request: accounting_pb2.EstimateDebateCostRequest) -> DebatePlan:
    c = request.config
    return DebatePlan(
        topic=c.topic,
        debaters=tuple(DebaterPlan(p.name, p.model, p.persona, p.stance) for p in c.participants),
        judge_models=tuple(c.judge.models),
        orderings=c.judge.orderings,
        rounds=c.format.round_limit,
        sequential=c.format.turn_order == common_pb2.TURN_ORDER_SEQUENTIAL,
        max_tokens_per_turn=c.max_tokens_per_turn,
        context_max_tokens=c.context.max_tokens,
        window_size=c.context.window_size,
        expected_completion_tokens=request.expected_completion_tokens,
    )


def _cap_from_pb(request: accounting_pb2.SetDebateBudgetRequest) -> Decimal | None:
    """The cap (None: unset, no cap), read by the one money parser: plain decimal, USD."""
    if not request.HasField("cap"):
        return None
    v = Violations()
    amount = read_money(request.cap, "cap", v)
    v.raise_if_any()
    return amount


def _check_estimate_money(request: accounting_pb2.EstimateDebateCostRequest) -> None:
    """The config's budget, when set, is read as CreateDebate reads it (the estimate ignores it)."""
    if request.config.HasField("budget"):
        v = Violations()
        read_money(request.config.budget, "config.budget", v, positive=True)
        v.raise_if_any()


class AccountingServicer(accounting_pb2_grpc.AccountingServiceServicer):
    def __init__(self, accounting: Accounting):
        self.accounting = accounting

    def _model_lines(self, lines: list[Line]) -> list[common_pb2.CostLine]:
        """by_model lines, each with the source of its model's price ("declared-<endpoint>" for a
        price declared in LLM_ENDPOINTS); the price book's current source, as rows store no source."""
        out = []
        for line in lines:
            price = self.accounting.prices.find(line.key)
            out.append(line_to_pb(line, price.source if price is not None else ""))
        return out

    async def CountTokens(self, request, context):
        messages = [{"role": m.role, "content": m.content, "name": m.name} for m in request.messages]
        count = await self.accounting.count_tokens(request.model, request.text, messages)
        method = accounting_pb2.COUNT_METHOD_EXACT if count.exact else accounting_pb2.COUNT_METHOD_ESTIMATE
        return accounting_pb2.CountTokensResponse(tokens=count.tokens, method=method, tokenizer=count.tokenizer)

    async def CalculateCost(self, request, context):
        cost = self.accounting.calculate_cost(
            request.model, usage_from_proto(request.usage), request.usage.total_tokens
        )
        return accounting_pb2.CalculateCostResponse(
            cost=usd(cost.total),
            input_cost=usd(cost.input),
            cached_input_cost=usd(cost.cached_input),
            output_cost=usd(cost.output),
            reasoning_cost=usd(cost.reasoning),
            price=price_to_pb(cost.price),
            cache_creation_input_cost=usd(cost.cache_creation_input),
        )

    async def RecordUsage(self, request, context):
        row, duplicate = await self.accounting.record(usage_request_from_pb(request))
        return accounting_pb2.RecordUsageResponse(record=record_to_pb(row), duplicate=duplicate)

    async def BatchRecordUsage(self, request, context):
        outcomes, costs = await self.accounting.record_usages_then_costs(
            [usage_request_from_pb(item) for item in request.requests], list(request.cost_debate_ids)
        )
        reply = accounting_pb2.BatchRecordUsageResponse(debate_costs=[self._cost_to_pb(r) for r in costs])
        for outcome in outcomes:
            result = reply.results.add()
            if isinstance(outcome, Exception):
                result.error.CopyFrom(item_error_to_pb(outcome))
            else:
                row, duplicate = outcome
                result.response.record.CopyFrom(record_to_pb(row))
                result.response.duplicate = duplicate
        return reply

    def _cost_to_pb(self, r: DebateCostReport) -> common_pb2.DebateCost:
        return common_pb2.DebateCost(
            debate_id=r.debate_id,
            total=usd(r.total.cost),
            usage=usage_to_proto(r.total.usage, estimated=r.total.estimated),
            by_participant=[line_to_pb(x) for x in r.by_participant],
            by_role=[line_to_pb(x) for x in r.by_role],
            by_round=[line_to_pb(x) for x in r.by_round],
            by_model=self._model_lines(r.by_model),
            budget=budget_to_pb(r.budget),
        )

    async def GetDebateCost(self, request, context):
        return accounting_pb2.GetDebateCostResponse(
            cost=self._cost_to_pb(await self.accounting.debate_cost(request.debate_id))
        )

    async def SetDebateBudget(self, request, context):
        budget = await self.accounting.set_budget(request.debate_id, _cap_from_pb(request))
        return accounting_pb2.SetDebateBudgetResponse(budget=budget_to_pb(budget))

    async def ReserveBudget(self, request, context):
        r = reserve_request_from_pb(request)
        result = await self.accounting.reserve(
            r.reservation_id, r.debate_id, r.model, r.prompt_tokens, r.max_completion_tokens
        )
        return reserve_to_pb(result)

    async def BatchReserveBudget(self, request, context):
        outcomes = await self.accounting.reserve_many([reserve_request_from_pb(item) for item in request.requests])
        reply = accounting_pb2.BatchReserveBudgetResponse()
        for outcome in outcomes:
            result = reply.results.add()
            if isinstance(outcome, Exception):
                result.error.CopyFrom(item_error_to_pb(outcome))
            else:
                result.response.CopyFrom(reserve_to_pb(outcome))
        return reply

    async def ReleaseBudget(self, request, context):
        budget = await self.accounting.release(request.reservation_id)
        return accounting_pb2.ReleaseBudgetResponse(budget=budget_to_pb(budget))

    async def EstimateDebateCost(self, request, context):
        _check_estimate_money(request)
        estimate = await self.accounting.estimate(plan_from_pb(request))
        return accounting_pb2.EstimateDebateCostResponse(
            expected=usd(estimate.expected.cost),
            worst_case=usd(estimate.worst_case.cost),
            expected_usage=usage_to_proto(estimate.expected.usage),
            worst_case_usage=usage_to_proto(estimate.worst_case.usage),
            by_model=self._model_lines(estimate.by_model),
        )
