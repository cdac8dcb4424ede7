"""The judging steps of a debate: the assessment of each round and the final verdict, asked of
the judge service, stored, recorded with accounting, then announced.

Each follows the store, record, then announce order of a turn (turns.py), under the judge's
JudgeCall.request_id keys (`debates/{id}/rounds/{r}/judge/...`, `debates/{id}/verdict/...`):
1. the judge's answer is stored, not yet "recorded", and committed;
2. the usage of each of the judge's calls goes to accounting;
3. the answer is marked recorded and RoundAssessed (or VerdictRendered) is logged.
After a crash, an answer stored but not recorded is recorded, never asked again; the judge's
own calls are idempotent by request_id, so a judge that was unavailable is simply asked again.

A judge request that fails after its model calls were made (JUDGE_OUTPUT_INVALID, a provider
failure) names them in its error (a `judge.v1.BilledCalls` detail, see `billed_calls`): they
are recorded the same way, under each call's own key, before the error goes on, so a debate
that fails on its judge still has every billed judge call in its ledger. The judge is asked
again (`attempts` in all) when it was unavailable, timed out or its provider failed; each
further try carries its own request id (`{prefix}/tries/{n}`), so the calls it makes again are
rows of their own rather than duplicates of the first try's. (A restart asks with the first
try's id again: calls a failed first try recorded before the crash and the judge makes again
are then absorbed as duplicates; that needs a crash between two tries of one judge request.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from debate.accounting.v1 import accounting_pb2 as acc
from debate.common.v1 import common_pb2 as common
from debate.judge.v1 import judge_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.errors import Aborted, DeadlineExceeded, DomainError, Unavailable
from services.common.text import plural
from services.orchestrator.events import EventHub
from services.orchestrator.human_seat import judge_text
from services.orchestrator.peers import Accounting, Judge
from services.orchestrator.run import DebateRun, announce_cost
from services.orchestrator.store import Store

log = logging.getLogger(__name__)

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
        prefix = f"debates/{run.debate_id}/rounds/{r}/judge"
        assessment = run.unrecorded_assessments.pop(r, None)
        if assessment is None:
            assessment = await self.evaluate(run, r, prefix)
            self.store.put_assessment(run.debate_id, assessment, recorded=False)
            self.hub.commit()  # stored before its usage is recorded anywhere
            self.store.ensure_held(run.debate_id)
        await self.record_calls(run, assessment.calls, prefix, common.ROLE_JUDGE, r)
        self.store.put_assessment(run.debate_id, assessment, recorded=True)
        run.assessments[r] = assessment
        # The cost first, so that whoever shows the scores has the judge's calls in the figures.
        announce_cost(self.store, self.hub, run)
        self.hub.emit(
            run.debate_id, round_assessed=pb.RoundAssessed(assessment=assessment, round_cost=run.round_cost(r))
        )
        return assessment

    async def verdict(self, run: DebateRun) -> common.Verdict:
        """The debate's verdict (every round assessed), recorded and announced; the stored one
        if it was already recorded. Raises what the judge or accounting raise."""
        row = self.store.existing_debate(run.debate_id)
        if row.verdict is not None and row.verdict_recorded:
            return common.Verdict.FromString(row.verdict)
        prefix = verdict_prefix(run.debate_id, run.verdict_version)
        if row.verdict is not None:  # stored, usage not recorded before a crash
            verdict = common.Verdict.FromString(row.verdict)
        else:
            verdict = await self.render(run, [run.assessments[r] for r in sorted(run.assessments)], prefix)
            verdict.version = run.verdict_version
            self.store.update_debate(run.debate_id, verdict=verdict.SerializeToString())
            self.hub.commit()
            self.store.ensure_held(run.debate_id)
        run.verdict_records = await self.record_calls(
            run, verdict.calls, prefix, common.ROLE_VERDICT, 0, with_cost=True
        )
        self.store.update_debate(run.debate_id, verdict_recorded=True)
        announce_cost(self.store, self.hub, run)
        self.hub.emit(
            run.debate_id, verdict_rendered=pb.VerdictRendered(verdict=verdict, verdict_cost=run.round_cost(0))
        )
        return verdict

    async def evaluate(
        self, run: DebateRun, r: int, prefix: str, ledger_round: int | None = None
    ) -> common.RoundAssessment:
        """Round `r`'s assessment by `run.config.judge`, asked under `prefix` (the billed calls of
        failed tries recorded, with round `ledger_round`, default `r`; the answer's own calls not
        yet): the debate's rounds, and a re-judging's (verdicts.py: its own judge config, its
        prefix, its calls in round 0's line)."""
        config = run.config
        debaters, turns = _debaters(config), _round_turns(run, r)

        def request(request_id: str) -> judge_pb2.EvaluateRoundRequest:
            return judge_pb2.EvaluateRoundRequest(
                debate_id=run.debate_id,
                topic=config.topic,
                round_number=r,
                debaters=debaters,
                turns=turns,
                judge=config.judge,
                request_id=request_id,
                seed=config.seed,
                sources=judge_sources(config),
                assess_consensus=config.stopping.HasField("consensus"),
            )

        ledger = r if ledger_round is None else ledger_round
        assessment = await self._ask(run, self.judge.evaluate_round, request, prefix, common.ROLE_JUDGE, ledger)
        assessment.round_number = r
        return assessment

    async def render(
        self, run: DebateRun, assessments: Sequence[common.RoundAssessment], prefix: str
    ) -> common.Verdict:
        """The verdict by `run.config.judge` on rounds 1 to the last played (`_last_round`: the round
        limit, or the rounds played before a stopping rule ended the debate) and their `assessments`,
        asked under `prefix` (as `evaluate`; its calls are recorded with round 0)."""
        config = run.config
        rounds = [
            judge_pb2.RoundTranscript(round_number=r, turns=_round_turns(run, r))
            for r in range(1, _last_round(run) + 1)
        ]
        debaters = _debaters(config)

        def request(request_id: str) -> judge_pb2.RenderVerdictRequest:
            return judge_pb2.RenderVerdictRequest(
                debate_id=run.debate_id,
                topic=config.topic,
                debaters=debaters,
                rounds=rounds,
                assessments=assessments,
                judge=config.judge,
                request_id=request_id,
                seed=config.seed,
                sources=judge_sources(config),
            )

        return await self._ask(run, self.judge.render_verdict, request, prefix, common.ROLE_VERDICT, 0)

    @staticmethod
    def raise_failure(run: DebateRun) -> None:
        """Raises the error of a round's assessment that failed. An assessment runs beside the next
        round, and the lifecycle calls this after each round: a failure ends the debate after the
        round under way (its turns are not cut), before the next round or assessment starts."""
        for task in run.assess_tasks.values():
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error

    async def record_calls(
        self,
        run: DebateRun,
        calls: Sequence[common.JudgeCall],
        prefix: str,
        role: common.Role.ValueType,
        round_number: int,
        *,
        with_cost: bool = False,
    ) -> list[acc.UsageRecord]:
        """The usage of each of the judge's model calls, under the call's own request_id. The calls
        are recorded concurrently (accounting commits rows that arrive together in one transaction);
        each one recorded is added to the run's cost, and the first failure, if any, is raised
        once all have been tried (a retry records only what is missing: the keys are idempotent).
        `with_cost` (the verdict's calls, the debate's last): they go in one call that also reads
        the debate's cost once they are committed, kept as `run.final_cost` when all were recorded
        (the lifecycle's final cost, without a GetDebateCost call of its own).
        Returns the ledger's row of each call (a duplicate's is the row first stored)."""
        keys = [call.request_id or f"{prefix}/calls/{i + 1}" for i, call in enumerate(calls)]
        requests = [
            acc.RecordUsageRequest(
                request_id=key,
                debate_id=run.debate_id,
                participant="judge",
                role=role,
                round_number=round_number,
                model=call.model,
                attempt=call.attempt or max(1, call.attempts),
                usage=call.usage,
            )
            for key, call in zip(keys, calls, strict=True)
        ]
        cost: common.DebateCost | None = None
        replies: list[acc.RecordUsageResponse | BaseException]
        if with_cost and requests:
            try:
                outcomes, cost = await self.accounting.record_usages_then_cost(requests, run.debate_id)
                replies = list(outcomes)
            except DomainError as error:  # the call failed: no item is known to be recorded
                replies = [error] * len(requests)
        else:
            replies = await asyncio.gather(
                *(self.accounting.record_usage(request) for request in requests), return_exceptions=True
            )
        failure: BaseException | None = None
        records = []
        for key, reply in zip(keys, replies, strict=True):
            if isinstance(reply, BaseException):
                failure = failure or reply
                run.unanswered.add(key)
            else:
                run.add_cost(reply)
                records.append(reply.record)
        if failure is not None:
            raise failure
        if cost is not None:
            run.final_cost = cost  # after add_cost: it includes these records
        return records

    async def _record_billed(
        self, run: DebateRun, error: DomainError, prefix: str, role: common.Role.ValueType, round_number: int
    ) -> None:
        """Records the calls a failed judge request made, and announces the new cost. A failure to
        record them is logged: the judge's error is what the debate ends with."""
        calls = billed_calls(error)
        if not calls:
            return
        try:
            await self.record_calls(run, calls, prefix, role, round_number)
        except DomainError as failure:
            log.warning(
                "could not record the %s of a failed judge request: %s", plural(len(calls), "call"), failure.message
            )
        announce_cost(self.store, self.hub, run)

    async def _ask(
        self,
        run: DebateRun,
        method: Callable[[Request], Awaitable[Reply]],
        request: Callable[[str], Request],
        prefix: str,
        role: common.Role.ValueType,
        round_number: int,
    ) -> Reply:
        """The judge's answer to `request(request_id)`, the first try under `prefix`. Each failed
        try's billed calls are recorded; a judge that was unavailable, timed out or whose provider
        failed is asked again, `attempts` tries in all, try n > 1 under `{prefix}/tries/{n}`."""
        attempt = 1
        while True:
            try:
                return await method(request(prefix if attempt == 1 else f"{prefix}/tries/{attempt}"))
            except DomainError as error:
                await self._record_billed(run, error, prefix, role, round_number)
                if not _worth_another_try(error) or attempt >= self.attempts:
                    raise
            await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
            attempt += 1


def verdict_prefix(debate_id: str, version: int) -> str:
    """The judge request id of a verdict version's verdict, the prefix of its calls' ledger keys:
    `debates/{id}/verdict` for version 1 (as before versions existed), `debates/{id}/verdicts/{v}/verdict`
    for the later ones."""
    return f"debates/{debate_id}/verdict" if version <= 1 else f"debates/{debate_id}/verdicts/{version}/verdict"


def billed_calls(error: BaseException) -> list[common.JudgeCall]:
    """The model calls a failed judge request made (the `judge.v1.BilledCalls` in the error's
    details, put there by the judge client), in the judge's order; none when it made none."""
    if not isinstance(error, DomainError):
        return []
    return [call for detail in error.details if isinstance(detail, judge_pb2.BilledCalls) for call in detail.calls]


def _worth_another_try(error: DomainError) -> bool:
    """Unavailable or timed out, or a provider failure the judge reports as ABORTED because it
    had already made billed calls (not JUDGE_OUTPUT_INVALID: the same model is likely to fail the
    same way, and the caller decides whether that is worth another bill)."""
    if isinstance(error, Unavailable | DeadlineExceeded):
        return True
    return isinstance(error, Aborted) and error.reason.startswith("PROVIDER_")


def _last_round(run: DebateRun) -> int:
    """The last round the verdict covers: the round limit, or the rounds played before a stop."""
    if run.stop is not None and run.stop.rounds_played:
        return run.stop.rounds_played
    return run.config.format.round_limit


def _debaters(config: common.DebateConfig) -> list[judge_pb2.Debater]:
    return [judge_pb2.Debater(name=p.name, stance=p.stance, persona=p.persona) for p in config.participants]


def _round_turns(run: DebateRun, r: int) -> list[judge_pb2.DebaterTurn]:
    """The round's turns as the judge reads them: each with its checked quotes, a human seat's
    skipped turn as a note saying so (`judge_text`)."""
    turns = [run.turns[(r, p.name)] for p in run.config.participants]
    return [judge_pb2.DebaterTurn(debater=t.participant, text=judge_text(t), quotes=t.quotes) for t in turns]


def judge_sources(config: common.DebateConfig) -> list[common.SourceDocument]:
    """The documents the judge sees: none when the debate hides them (evidence.hide_sources_from_judge)."""
    return [] if config.evidence.hide_sources_from_judge else list(config.sources)
