"""The judge and accounting services as the engine sees them: two small protocols.

The engine's modules depend on these only, never on how a call travels: the orchestrator's
composition root passes the gRPC clients of `services.orchestrator.clients`, and tests pass
in-process fakes (`tests/support/orchestrator_fakes.py`). A call that fails raises a typed
domain error (`services.common.errors`): `Unavailable` when the peer cannot be reached,
`FailedPrecondition`, `NotFound`, `ResourceExhausted`, `DeadlineExceeded`, ... otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from debate.accounting.v1 import accounting_pb2 as acc
from debate.common.v1 import common_pb2
from debate.judge.v1 import judge_pb2

from services.common.errors import DomainError


class Judge(Protocol):
    """Scores a round, and gives the verdict, by the judge's own idempotent request ids."""

    async def evaluate_round(self, request: judge_pb2.EvaluateRoundRequest) -> common_pb2.RoundAssessment: ...
    async def render_verdict(self, request: judge_pb2.RenderVerdictRequest) -> common_pb2.Verdict: ...


class Accounting(Protocol):
    """The ledger and the budgets: usage recorded once by request_id, reservations by id."""

    async def record_usage(self, request: acc.RecordUsageRequest) -> acc.RecordUsageResponse: ...
    async def record_usages_then_cost(
        self, requests: Sequence[acc.RecordUsageRequest], debate_id: str
    ) -> tuple[list[acc.RecordUsageResponse | DomainError], common_pb2.DebateCost]:
        """Each request recorded as `record_usage` would (its own outcome: the response or the
        DomainError it would raise), then `debate_cost(debate_id)` read once they are committed:
        a debate's last records and its final cost in one call. Raises when the call fails."""
        ...

    async def reserve_budget(self, request: acc.ReserveBudgetRequest) -> acc.ReserveBudgetResponse: ...
    async def release_budget(self, reservation_id: str) -> None: ...
    async def set_debate_budget(self, debate_id: str, cap: common_pb2.Money | None) -> None: ...
    async def debate_cost(self, debate_id: str) -> common_pb2.DebateCost: ...
