"""The judging steps of a debate: the assessment of each round and the final verdict, asked of
the judge service, stored, recorded with accounting, then announced.

Each follows the store, record, then announce order of a turn (turns.py), under the judge's
JudgeCall.request_id keys (`debates/{id}/rounds/{r}/judge/...`, `debates/{id}/verdict/...`):
1. the judge's answer is stored, not yet "recorded", and committed;
2. the usage of each of the judge's calls goes to accounting;
3. the answer is marked recorded and RoundAssessed (or VerdictRendered) is logged.
After a crash, an answer stored but not recorded is recorded, never asked again; the judge's
own calls are idempotent by request_id, so a judge that was unavailable is simply asked again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from debate.accounting.v1 import accounting_pb2 as acc
from debate.common.v1 import common_pb2 as common
from debate.judge.v1 import judge_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.errors import DeadlineExceeded, Unavailable
from services.orchestrator.events import EventHub
from services.orchestrator.peers import Accounting, Judge
from services.orchestrator.run import DebateRun, announce_cost
from services.orchestrator.store import Store

Request = TypeVar("Request")
Reply = TypeVar("Reply")


class Judging:
    """Asks the judge for assessments and verdicts; `attempts` tries when it is unavailable
    (settings.judge_attempts)."""

    def __init__(self, store: Store, hub: EventHub, judge: Judge, accounting: Accounting, attempts: int):
        self.store = store
        self.hub = hub
        self.judge = judge
        self.accounting = accounting
        self.attempts = attempts

    async def assess(self, run: DebateRun, r: int) -> common.RoundAssessment:
        """Round `r`'s assessment (its turns all stored), recorded and announced with the new
        cost. Raises what the judge or accounting raise."""
        config = run.config
        prefix = f"debates/{run.debate_id}/rounds/{r}/judge"
        assessment = run.unrecorded_assessments.pop(r, None)
        if assessment is None:
            assessment = await self._ask(
                self.judge.evaluate_round,
                judge_pb2.EvaluateRoundRequest(
                    debate_id=run.debate_id,
                    topic=config.topic,
                    round_number=r,
                    debaters=_debaters(config),
                    turns=_round_turns(run, r),
                    judge=config.judge,
                    request_id=prefix,
                    seed=config.seed,
                ),
            )
            assessment.round_number = r
            self.store.put_assessment(run.debate_id, assessment, recorded=False)
            self.hub.commit()  # stored before its usage is recorded anywhere
        await self._record_calls(run, assessment.calls, prefix, common.ROLE_JUDGE, r)
        self.store.put_assessment(run.debate_id, assessment, recorded=True)
        run.assessments[r] = assessment
        self.hub.emit(run.debate_id, round_assessed=pb.RoundAssessed(assessment=assessment))
        announce_cost(self.store, self.hub, run)
        return assessment

    async def verdict(self, run: DebateRun) -> common.Verdict:
        """The debate's verdict (every round assessed), recorded and announced; the stored one
        if it was already recorded. Raises what the judge or accounting raise."""
        row = self.store.existing_debate(run.debate_id)
        if row.verdict is not None and row.verdict_recorded:
            return common.Verdict.FromString(row.verdict)
        config = run.config
        prefix = f"debates/{run.debate_id}/verdict"
        if row.verdict is not None:  # stored, usage not recorded before a crash
            verdict = common.Verdict.FromString(row.verdict)
        else:
            rounds = [
                judge_pb2.RoundTranscript(round_number=r, turns=_round_turns(run, r))
                for r in range(1, config.format.round_limit + 1)
            ]
            verdict = await self._ask(
                self.judge.render_verdict,
                judge_pb2.RenderVerdictRequest(
                    debate_id=run.debate_id,
                    topic=config.topic,
                    debaters=_debaters(config),
                    rounds=rounds,
                    assessments=[run.assessments[r] for r in sorted(run.assessments)],
                    judge=config.judge,
                    request_id=prefix,
                    seed=config.seed,
                ),
            )
            self.store.update_debate(run.debate_id, verdict=verdict.SerializeToString())
            self.hub.commit()
        await self._record_calls(run, verdict.calls, prefix, common.ROLE_VERDICT, 0)
        self.store.update_debate(run.debate_id, verdict_recorded=True)
        self.hub.emit(run.debate_id, verdict_rendered=pb.VerdictRendered(verdict=verdict))
        return verdict

    @staticmethod
    def raise_failure(run: DebateRun) -> None:
        """A round's assessment runs beside the next round; its failure ends the debate at once."""
        for task in run.assess_tasks.values():
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error

    async def _record_calls(
        self,
        run: DebateRun,
        calls: Sequence[common.JudgeCall],
        prefix: str,
        role: common.Role.ValueType,
        round_number: int,
    ) -> None:
        """The usage of each of the judge's model calls, under the call's own request_id."""
        for i, call in enumerate(calls):
            reply = await self.accounting.record_usage(
                acc.RecordUsageRequest(
                    request_id=call.request_id or f"{prefix}/calls/{i + 1}",
                    debate_id=run.debate_id,
                    participant="judge",
                    role=role,
                    round_number=round_number,
                    model=call.model,
                    attempt=max(1, call.attempts),
                    usage=call.usage,
                )
            )
            run.add_cost(reply)

    async def _ask(self, method: Callable[[Request], Awaitable[Reply]], request: Request) -> Reply:
        """The judge's own calls are idempotent by request_id: an unavailable judge is asked again."""
        attempt = 1
        while True:
            try:
                return await method(request)
            except (Unavailable, DeadlineExceeded):
                if attempt >= self.attempts:
                    raise
                await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
                attempt += 1


def _debaters(config: common.DebateConfig) -> list[judge_pb2.Debater]:
    return [judge_pb2.Debater(name=p.name, stance=p.stance, persona=p.persona) for p in config.participants]


def _round_turns(run: DebateRun, r: int) -> list[judge_pb2.DebaterTurn]:
    return [judge_pb2.DebaterTurn(debater=p.name, text=run.turns[(r, p.name)].text) for p in run.config.participants]
