"""Verdict versions: every verdict a debate was given, kept beside the others, and the two ways a
completed debate gets another one, re-judging (RejudgeDebate) and continuing (ContinueDebate).

A debate's versions are numbered 1, 2, ... in the order they are made (the `verdicts` table,
schema version 4; `debates.verdict` stays the latest verdict):
- version 1, VERDICT_REASON_DEBATE_END: the verdict rendered when the debate's last round was
  played (stored by the lifecycle's completion, `store_ending_version`);
- VERDICT_REASON_REJUDGE: the stored transcript judged again with another judge config (models,
  orderings, rubric): every round scored again (EvaluateRound), then a verdict (RenderVerdict), by
  the judging steps of a debate (judging.py: `Judging.evaluate`, `render`, `record_calls`); no
  debater model is called, and the debate's own rounds, assessments and earlier verdicts are
  left as they are. Its round scores are kept in the version (`VerdictVersion.assessments`);
- VERDICT_REASON_CONTINUATION: more rounds played through the lifecycle's round loop, then the
  whole debate judged with the debate's own judge config (its rounds' assessments).

Money. A re-judging's calls are recorded with accounting under keys of their own,
`debates/{id}/verdicts/{v}/rounds/{r}/judge/...` and `debates/{id}/verdicts/{v}/verdict/...`,
role JUDGE (round scores) or VERDICT, participant "judge" and round 0: they add to the debate's
cost, to by_round's line "0" (which sums every verdict version's judge calls, the rounds' lines
staying what the rounds cost when they were played), and to by_role and by_model. A continued
debate's new rounds are rounds of their own (by_round "N+1", ...), charged as any round; its
verdict is recorded under `debates/{id}/verdicts/{v}/verdict/...` (judging.verdict_prefix), round 0.
Each version's own figure is `VerdictVersion.cost`.

Idempotency and crashes. A request's version is stored with its request_id before any judge
call, and committed: a retry with the same request_id finds it and acts once (a finished
version is returned; an unfinished re-judging goes on where it stopped). A re-judging follows
the store, record, then announce order of judging.py: each round's scores (then the verdict)
are stored in the version, committed, then their calls recorded under their own keys, so a
crash then a retry asks the judge only for what was not stored and charges nothing twice (what
was recorded is recorded again as a duplicate). An unfinished re-judging (a crash, a judge that
failed) is not listed among the debate's versions and goes on only when its request is retried;
its number stays taken. A continuation is a RUNNING debate with an
unfinished version: a restart resumes it like any running debate (lifecycle.py), and it ends
with that version (`DebateRun.verdict_version`).

States. A re-judging leaves the debate COMPLETED (its events: CostUpdated after the calls of each
round and of the verdict, then VerdictVersionRendered). A continuation makes it RUNNING again
(DebateContinued, then DebateStateChanged RUNNING), and COMPLETED again after its verdict
(VerdictRendered, VerdictVersionRendered, DebateCompleted): a continuation that fails (a budget
exceeded, a judge failure, a cancel) ends the debate in that state, its earlier versions kept.

Agreement (`agreement`): two verdicts agree on the winner when they name the same one or both
are a tie; their rank correlation is Kendall's tau-b over the debaters' final scores.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from decimal import Decimal

from debate.accounting.v1 import accounting_pb2 as acc
from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from google.rpc import error_details_pb2

from services.common.debate_rules import ModelRules
from services.common.errors import Aborted, FailedPrecondition, FieldViolation, InvalidArgument, Violations
from services.common.money import ZERO, usd
from services.common.text import clean_text
from services.common.usage import add_token_usage
from services.orchestrator.config import Limits, validate_judge
from services.orchestrator.context import ContextBuilder
from services.orchestrator.events import EventHub
from services.orchestrator.judging import Judging, verdict_prefix
from services.orchestrator.peers import Accounting
from services.orchestrator.run import DebateRun, S, announce_cost
from services.orchestrator.store import DebateRow, Store

R = pb.VerdictReason
CLAIM_TRIES = 5  # version numbers tried when concurrent requests take them (replicas on one database)


# ==== agreement ===================================================================================
def kendall_tau_b(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b of two paired score lists (ties corrected), -1 to 1; None when either
    list orders nothing (every score equal, or fewer than two)."""
    concordant = discordant = ties_x = ties_y = 0
    n = len(xs)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = xs[i] - xs[j], ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else None


def agreement(later: common.Verdict, earlier: common.Verdict, earlier_version: int) -> pb.VerdictAgreement:
    """How far `later` agrees with `earlier` (VerdictAgreement's docstring in the proto): the same
    winner (or both a tie), Kendall's tau-b of the final scores (by debater; a debater missing
    from one side counts 0), and their mean absolute difference."""
    a = {s.debater: s.score for s in earlier.final_scores}
    b = {s.debater: s.score for s in later.final_scores}
    names = sorted(a.keys() | b.keys())
    xs, ys = [a.get(n, 0.0) for n in names], [b.get(n, 0.0) for n in names]
    tau = kendall_tau_b(xs, ys)
    if tau is None:  # one of them orders nothing: agreement only if neither does
        tau = 1.0 if len(set(xs)) <= 1 and len(set(ys)) <= 1 else 0.0
    same = (earlier.tie and later.tie) or (not earlier.tie and not later.tie and earlier.winner == later.winner)
    difference = sum(abs(x - y) for x, y in zip(xs, ys, strict=True)) / len(names) if names else 0.0
    return pb.VerdictAgreement(
        version=earlier_version, same_winner=same, rank_correlation=round(tau, 6), mean_score_difference=difference
    )


def cost_line(key: str, records: Sequence[acc.UsageRecord]) -> common.CostLine:
    """The sum of ledger rows as a CostLine: their USD, tokens and number."""
    line = common.CostLine(key=key, calls=len(records))
    total = ZERO
    for record in records:
        total += Decimal(record.cost.amount or "0")
        add_token_usage(line.usage, record.usage)
    line.cost.CopyFrom(usd(total))
    return line


# ==== the stored versions ===========================================================================
def versions(store: Store, row: DebateRow) -> list[pb.VerdictVersion]:
    """The debate's finished versions, oldest first. A debate that completed before versions
    existed has its stored verdict as version 1 (its cost line unknown: empty)."""
    done = [entry for entry, finished in store.verdict_versions(row.debate_id) if finished]
    if not done and row.verdict is not None and row.verdict_recorded:
        return [_legacy_first(row)]
    return done


def _legacy_first(row: DebateRow) -> pb.VerdictVersion:
    verdict = common.Verdict.FromString(row.verdict or b"")
    verdict.version = 1
    entry = pb.VerdictVersion(
        version=1,
        verdict=verdict,
        reason=R.VERDICT_REASON_DEBATE_END,
        judge=row.config.judge,
        round_count=row.config.format.round_limit,
    )
    entry.create_time.FromNanoseconds(row.update_ns)
    return entry


def _agreements(entry: pb.VerdictVersion, earlier: Sequence[pb.VerdictVersion]) -> list[pb.VerdictAgreement]:
    return [agreement(entry.verdict, e.verdict, e.version) for e in earlier if e.version < entry.version]


def apply_continuations(store: Store, run: DebateRun) -> None:
    """Readies a run for the continuations of its debate (the lifecycle calls this at each
    launch): their follow-up questions go into its context, and an unfinished one is the
    verdict version the run ends with."""
    for entry, done in store.verdict_versions(run.debate_id):
        if entry.reason != R.VERDICT_REASON_CONTINUATION:
            continue
        run.context.questions.append((entry.first_round, entry.question))
        if not done:
            run.verdict_version = entry.version


async def store_ending_version(
    store: Store, hub: EventHub, judging: Judging, run: DebateRun, verdict: common.Verdict
) -> None:
    """Stores the verdict a run ended with as its version (1, or its continuation's), with the
    cost of its calls and, past 1, its agreement with version 1, and announces a later version
    (VerdictVersionRendered). Called once the verdict's calls are recorded; again after a crash
    (the same row written over)."""
    v = run.verdict_version
    records = run.verdict_records
    if not records and verdict.calls:  # recorded before a restart: the ledger's rows, as duplicates
        records = await judging.record_calls(
            run, verdict.calls, verdict_prefix(run.debate_id, v), common.ROLE_VERDICT, 0
        )
    stored = {entry.version: entry for entry, _ in store.verdict_versions(run.debate_id)}
    entry = stored.get(v) or pb.VerdictVersion(version=v, reason=R.VERDICT_REASON_DEBATE_END)
    if v == 1 and 1 not in stored:
        entry.create_time.FromNanoseconds(time.time_ns())
    entry.verdict.CopyFrom(verdict)
    entry.verdict.version = v
    entry.judge.CopyFrom(run.config.judge)
    entry.round_count = run.config.format.round_limit
    entry.cost.CopyFrom(cost_line(f"v{v}", records))
    if v > 1 and 1 in stored:
        entry.agreement.CopyFrom(agreement(verdict, stored[1].verdict, 1))
    if v in stored:
        store.update_verdict_version(run.debate_id, entry, done=True)
    else:
        store.insert_verdict_version(run.debate_id, entry, time.time_ns(), done=True)
    if v > 1:
        hub.emit(run.debate_id, verdict_version_rendered=pb.VerdictVersionRendered(verdict_version=entry))


# ==== re-judging and continuing =====================================================================
class VerdictVersions:
    """RejudgeDebate and ContinueDebate's domain (see the module docstring). `max_request_id`:
    the longest request_id accepted, in characters."""

    def __init__(
        self,
        store: Store,
        hub: EventHub,
        judging: Judging,
        accounting: Accounting,
        limits: Limits,
        model_rules: ModelRules,
        max_request_id: int,
    ):
        self.store = store
        self.hub = hub
        self.judging = judging
        self.accounting = accounting
        self.limits = limits
        self.model_rules = model_rules
        self.max_request_id = max_request_id
        # Re-judgings under way in this process, by (debate, version): a concurrent retry joins it.
        self._rejudging: dict[tuple[str, int], asyncio.Future[pb.VerdictVersion]] = {}

    def versions(self, row: DebateRow) -> list[pb.VerdictVersion]:
        return versions(self.store, row)

    # -- checks ---------------------------------------------------------------------------------
    def _rounds_played(self, row: DebateRow) -> int:
        """The rounds a completed debate played: its round limit, or the rounds played before a
        stopping rule ended it (stopping.py); a re-judging scores those."""
        stopped = self.store.stop(row.debate_id)
        if stopped is not None and stopped[0].rounds_played:
            return stopped[0].rounds_played
        return row.config.format.round_limit

    def _check_request_id(self, v: Violations, request_id: str) -> None:
        if not request_id.strip():
            v.add("request_id", "must not be empty: it makes a retried request act once")
        elif len(request_id) > self.max_request_id:
            v.add("request_id", f"must be at most {self.max_request_id} characters")

    @staticmethod
    def _require_completed(row: DebateRow, what: str) -> None:
        if row.state != S.DEBATE_STATE_COMPLETED:
            error = FailedPrecondition(
                f"debate is {S.Name(row.state)}; only a COMPLETED debate can be {what}", reason="DEBATE_NOT_COMPLETED"
            )
            error.details.append(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type="DEBATE_STATE",
                            subject=f"debates/{row.debate_id}",
                            description=f"state is {S.Name(row.state)}, must be DEBATE_STATE_COMPLETED",
                        )
                    ]
                )
            )
            raise error

    def _next_version(self, row: DebateRow) -> int:
        """The next version's number; version 1 of a debate made before versions existed is stored first."""
        stored = self.store.verdict_versions(row.debate_id)
        if not stored and row.verdict is not None:
            first = _legacy_first(row)
            self.store.insert_verdict_version(row.debate_id, first, row.update_ns, done=True)
            return 2
        return max((entry.version for entry, _ in stored), default=1) + 1

    def _claim(self, row: DebateRow, versions_entry: pb.VerdictVersion) -> pb.VerdictVersion:
        """Stores `versions_entry` as the next version (committed) and returns the one stored for
        its request_id: this one, or one a concurrent request stored first. Numbers taken by a
        concurrent request (another request_id) are skipped; Aborted after CLAIM_TRIES."""
        for _ in range(CLAIM_TRIES):
            versions_entry.version = self._next_version(row)
            self.store.insert_verdict_version(
                row.debate_id, versions_entry, versions_entry.create_time.ToNanoseconds(), done=False
            )
            self.hub.commit()
            found = self.store.verdict_version_by_request(row.debate_id, versions_entry.request_id)
            if found is not None:
                return found[0]
        raise Aborted("could not store a new verdict version; try again", reason="VERDICT_VERSION_CONFLICT")

    # -- RejudgeDebate ----------------------------------------------------------------------------
    async def rejudge(
        self, row: DebateRow, judge: common.JudgeConfig, request_id: str
    ) -> tuple[pb.VerdictVersion, list[pb.VerdictAgreement]]:
        """A new verdict version of a COMPLETED debate by `judge` (see the module docstring), with
        its agreement with each earlier version. Raises InvalidArgument (the judge config, the
        request_id), FailedPrecondition (DEBATE_NOT_COMPLETED), Aborted (DEBATE_BUSY: another
        replica holds the debate, e.g. a lease a killed replica left, for at most LEASE_SECONDS;
        try again), and what the judge or accounting raise (the version then stays
        unfinished: a retry with the same request_id goes on with it)."""
        v = Violations()
        self._check_request_id(v, request_id)
        normalised: common.JudgeConfig | None = None
        try:
            normalised = validate_judge(judge, len(row.config.participants), self.limits, self.model_rules)
        except InvalidArgument as error:
            for violation in error.violations:
                v.add(violation.field, violation.description)
        v.raise_if_any()
        assert normalised is not None
        found = self.store.verdict_version_by_request(row.debate_id, request_id)
        if found is not None and found[0].reason != R.VERDICT_REASON_REJUDGE:
            raise InvalidArgument([FieldViolation("request_id", "was used by another request on this debate")])
        if found is None:
            self._require_completed(row, "re-judged")
            entry = pb.VerdictVersion(
                reason=R.VERDICT_REASON_REJUDGE,
                judge=normalised,
                request_id=request_id,
                round_count=self._rounds_played(row),
            )
            entry.create_time.FromNanoseconds(time.time_ns())
            entry = self._claim(row, entry)
        else:
            entry = found[0]
        if found is None or not found[1]:
            self._require_completed(row, "re-judged")
            entry = await self._rejudge_once(row, entry)
        earlier = versions(self.store, self.store.existing_debate(row.debate_id))
        return entry, _agreements(entry, earlier)

    async def _rejudge_once(self, row: DebateRow, entry: pb.VerdictVersion) -> pb.VerdictVersion:
        """Runs an unfinished re-judging, or joins the one under way in this process."""
        key = (row.debate_id, entry.version)
        running = self._rejudging.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[pb.VerdictVersion] = asyncio.get_running_loop().create_future()
        self._rejudging[key] = future
        try:
            result = await self._run_rejudge(row, entry)
            future.set_result(result)
            return result
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: the joiners get it, if any
            raise
        finally:
            del self._rejudging[key]

    async def _run_rejudge(self, row: DebateRow, entry: pb.VerdictVersion) -> pb.VerdictVersion:
        debate_id, version = row.debate_id, entry.version
        if not self.store.claim(debate_id):
            raise Aborted("debate is in use by another replica; try again", reason="DEBATE_BUSY")
        self.hub.open_log(debate_id).closing = False  # its end may wait for a commit
        try:
            config = common.DebateConfig()
            config.CopyFrom(row.config)
            config.judge.CopyFrom(entry.judge)
            config.format.round_limit = entry.round_count
            run = DebateRun(debate_id=debate_id, config=config, context=ContextBuilder(config))
            for turn, _ in self.store.turns(debate_id):
                run.turns[(turn.round_number, turn.participant)] = turn
            run.restore_cost(await self.accounting.debate_cost(debate_id))
            base = f"debates/{debate_id}/verdicts/{version}"
            records: list[acc.UsageRecord] = []
            scored = {a.round_number: a for a in entry.assessments}
            for r in range(1, entry.round_count + 1):
                prefix = f"{base}/rounds/{r}/judge"
                assessment = scored.get(r)
                if assessment is None:  # stored before its calls are recorded (judging.py's order)
                    assessment = await self.judging.evaluate(run, r, prefix, ledger_round=0)
                    entry.assessments.append(assessment)
                    self._save(debate_id, entry, done=False)
                records += await self.judging.record_calls(run, assessment.calls, prefix, common.ROLE_JUDGE, 0)
                announce_cost(self.store, self.hub, run)
            prefix = verdict_prefix(debate_id, version)
            if not entry.HasField("verdict"):
                verdict = await self.judging.render(run, list(entry.assessments), prefix)
                verdict.version = version
                entry.verdict.CopyFrom(verdict)
                self._save(debate_id, entry, done=False)
            records += await self.judging.record_calls(run, entry.verdict.calls, prefix, common.ROLE_VERDICT, 0)
            entry.cost.CopyFrom(cost_line(f"v{version}", records))
            first = next((e for e in versions(self.store, row) if e.version == 1), None)
            if first is not None:
                entry.agreement.CopyFrom(agreement(entry.verdict, first.verdict, 1))
            cost = await self.accounting.debate_cost(debate_id)
            self.store.update_verdict_version(debate_id, entry, done=True)
            self.store.update_debate(
                debate_id,
                verdict=entry.verdict.SerializeToString(),
                verdict_recorded=True,
                cost=cost.SerializeToString(),
                cost_amount=cost.total.amount or "0",
            )
            self.hub.emit(
                debate_id, cost_updated=pb.CostUpdated(total=cost.total, usage=cost.usage, budget=cost.budget)
            )
            self.hub.emit(debate_id, verdict_version_rendered=pb.VerdictVersionRendered(verdict_version=entry))
            return entry
        finally:
            self.hub.close(debate_id)
            self.store.release(debate_id)
            self.hub.commit()

    def _save(self, debate_id: str, entry: pb.VerdictVersion, *, done: bool) -> None:
        """The version's progress, committed before an outside effect follows it."""
        self.store.update_verdict_version(debate_id, entry, done=done)
        self.hub.commit()
        self.store.ensure_held(debate_id)

    # -- ContinueDebate ---------------------------------------------------------------------------
    def begin_continuation(
        self, row: DebateRow, extra_rounds: int, question: str, request_id: str
    ) -> tuple[DebateRow, int, bool]:
        """Stores a continuation of a COMPLETED debate: its version (unfinished), the debate's new
        round_limit, its verdict and final cost cleared (the earlier verdicts are versions). Not
        committed: the lifecycle makes the debate RUNNING in the same transaction
        (Lifecycle.continue_debate), this replica holding its lease (claimed here, before any
        write). Returns the debate, the version it will end with, and whether this request is
        new (False: a retry; nothing stored). Raises InvalidArgument (extra_rounds, question,
        request_id), FailedPrecondition (DEBATE_NOT_COMPLETED; DEBATE_STOPPED_EARLY for a debate a
        stopping rule ended) and Aborted (DEBATE_BUSY while it is being re-judged here, or another
        replica holds it: try again)."""
        v = Violations()
        self._check_request_id(v, request_id)
        room = self.limits.max_rounds - row.config.format.round_limit
        if extra_rounds < 1 or extra_rounds > room:
            v.add("extra_rounds", f"must be 1 to {max(room, 0)} (at most {self.limits.max_rounds} rounds in all)")
        text = clean_text(question)
        if len(text) > self.limits.max_topic_chars:
            v.add("question", f"must be at most {self.limits.max_topic_chars} characters")
        v.raise_if_any()
        found = self.store.verdict_version_by_request(row.debate_id, request_id)
        if found is not None:
            if found[0].reason != R.VERDICT_REASON_CONTINUATION:
                raise InvalidArgument([FieldViolation("request_id", "was used by another request on this debate")])
            return row, found[0].version, False
        self._require_completed(row, "continued")
        if self.store.stop(row.debate_id) is not None:
            # Its rounds after the stop were never played (one was cut): follow-up rounds would
            # leave a gap in the transcript, so a stopped debate is re-judged, not continued.
            raise FailedPrecondition(
                "a stopping rule ended this debate early; it cannot be continued (it can be re-judged)",
                reason="DEBATE_STOPPED_EARLY",
            )
        if any(debate_id == row.debate_id for debate_id, _ in self._rejudging):
            raise Aborted("the debate is being re-judged; continue it after that", reason="DEBATE_BUSY")
        if not self.store.claim(row.debate_id):
            raise Aborted("debate is in use by another replica; try again", reason="DEBATE_BUSY")
        first_round = row.config.format.round_limit + 1
        entry = pb.VerdictVersion(
            reason=R.VERDICT_REASON_CONTINUATION,
            judge=row.config.judge,
            request_id=request_id,
            round_count=row.config.format.round_limit + extra_rounds,
            first_round=first_round,
            question=text,
        )
        now = time.time_ns()
        entry.create_time.FromNanoseconds(now)
        entry.version = self._next_version(row)
        self.store.insert_verdict_version(row.debate_id, entry, now, done=False)
        config = common.DebateConfig()
        config.CopyFrom(row.config)
        config.format.round_limit = entry.round_count
        self.store.update_debate(
            row.debate_id, config=config.SerializeToString(), verdict=None, verdict_recorded=False, cost=None
        )
        self.hub.open_log(row.debate_id, row.last_sequence).closing = False  # its end may wait for a commit
        self.hub.emit(
            row.debate_id,
            debate_continued=pb.DebateContinued(
                first_round=first_round, round_limit=entry.round_count, question=text, verdict_version=entry.version
            ),
        )
        return self.store.existing_debate(row.debate_id), entry.version, True
