"""The debate engine: the orchestrator's domain API, called by the servicer, over debates that
are stored (create, read, list) and debates that run.

It is composed of three parts, each with one reason to change:
- turns.py      turn generation: reservation, streaming, storing, recording, cut calls;
- judging.py    the judging steps: round assessments and the verdict;
- lifecycle.py  the lifecycle: start or queue, play round by round, resume, cancel, end.
They share one `DebateRun` per running debate (run.py). Every step that has happened is
stored, then recorded with accounting, then announced, so a restart resumes from the last
completed turn, re-runs nothing that finished and charges nothing twice.

Here: the tenant's view (another tenant's debate does not exist), the validation of a new
debate and the idempotency of its create by request_id, and paging.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from opentelemetry.trace import Tracer

from services.common.debate_rules import ModelRules
from services.common.errors import FieldViolation, InvalidArgument, NotFound
from services.common.llm.base import LLMClient
from services.orchestrator.config import Limits, validate_config
from services.orchestrator.events import EventHub
from services.orchestrator.human_seat import HumanSeats
from services.orchestrator.judging import Judging
from services.orchestrator.lifecycle import Lifecycle
from services.orchestrator.metrics import OrchestratorMetrics
from services.orchestrator.peers import Accounting, Judge
from services.orchestrator.run import S
from services.orchestrator.scheduler import Scheduler
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.store import DebateRow, Store, decode_page_token, encode_page_token
from services.orchestrator.turns import TurnRunner
from services.orchestrator.verdicts import VerdictVersions
from services.orchestrator.votes import Votes

MAX_REQUEST_ID = 128  # characters


class Engine:
    """`model_rules` says whether a model may be used (allowed, priced, its key set);
    `count_tokens(model, text)` counts tokens for the sliding window (the default tokenizer
    when None); `metrics`: the debates' metrics (None: metrics off); `tracer`: the service's
    tracer for the `debate` and `turn` spans (None: traces off; lifecycle.py says how a debate's
    trace is made)."""

    def __init__(
        self,
        store: Store,
        hub: EventHub,
        scheduler: Scheduler,
        llm: LLMClient,
        judge: Judge,
        accounting: Accounting,
        settings: OrchestratorSettings,
        model_rules: ModelRules,
        count_tokens: Callable[[str, str], int] | None = None,
        metrics: OrchestratorMetrics | None = None,
        tracer: Tracer | None = None,
    ):
        self.store = store
        self.hub = hub
        self.scheduler = scheduler
        self.settings = settings
        self.limits = Limits(settings)
        self.model_rules = model_rules
        self.turns = TurnRunner(store, hub, llm, accounting, settings.max_turn_attempts, tracer)
        self.human = HumanSeats(store, hub, self.turns.complete)  # human seats (issue 19 part 3)
        self.turns.human = self.human
        self.judging = Judging(store, hub, judge, accounting, settings.judge_attempts)
        self.lifecycle = Lifecycle(
            store,
            hub,
            scheduler,
            accounting,
            self.turns,
            self.judging,
            count_tokens,
            settings.lease_seconds,
            metrics,
            tracer,
        )
        self.votes = Votes(store, hub)  # human votes (votes.py; reports: judge_report.py)
        self.verdicts = VerdictVersions(
            store, hub, self.judging, accounting, self.limits, model_rules, max_request_id=MAX_REQUEST_ID
        )

    # ==== stored debates =========================================================================
    def create(self, tenant: str, config: common.DebateConfig, request_id: str) -> DebateRow:
        """Stores a new CREATED debate with the normalised config, committed. A request_id seen
        before for this tenant returns that first debate, whatever this config says. Raises
        InvalidArgument with a violation for each problem of the config or the request_id."""
        id_problems = []
        if len(request_id) > MAX_REQUEST_ID:
            id_problems.append(FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID} characters"))
        elif request_id:
            existing = self.store.find_by_request(tenant, request_id)
            if existing is not None:
                return existing  # a retried create: the first debate, whatever this config says
        try:
            normalised = validate_config(config, self.limits, self.model_rules)
        except InvalidArgument as error:
            raise InvalidArgument(id_problems + error.violations) from None
        if id_problems:
            raise InvalidArgument(id_problems)
        now = time.time_ns()
        row = DebateRow(
            debate_id=str(uuid.uuid4()),
            tenant=tenant,
            request_id=request_id,
            config=normalised,
            state=S.DEBATE_STATE_CREATED,
            create_ns=now,
            update_ns=now,
            queue_ns=0,
            current_round=0,
            end_reason="",
            cost_amount="",
            cost=None,
            verdict=None,
            verdict_recorded=False,
            last_sequence=0,
        )
        stored = self.store.insert_debate(row)  # the first debate of a request_id taken meanwhile
        self.hub.commit()
        self.lifecycle.created(stored.debate_id)
        return stored

    def get_row(self, tenant: str, debate_id: str) -> DebateRow:
        """The caller's debate; another tenant's debate does not exist for them (NotFound)."""
        row = self.store.get_debate(debate_id) if debate_id else None
        if row is None or row.tenant != tenant:
            raise NotFound(f"debate {debate_id!r} not found", reason="DEBATE_NOT_FOUND")
        return row

    def list_debates(self, tenant: str, state: int, page_size: int, page_token: str) -> tuple[list[DebateRow], str]:
        """A page of the tenant's debates, newest first (`state` 0: any state), and the token of
        the next page ("" after the last). Raises InvalidArgument for a token not made by us or
        made for another state filter."""
        after = None
        if page_token:
            try:
                create_ns, last_id, token_state = decode_page_token(page_token)
            except (ValueError, TypeError):
                raise InvalidArgument([FieldViolation("page_token", "not a token from a previous response")]) from None
            if token_state != state:
                raise InvalidArgument([FieldViolation("page_token", "was made for another state filter")])
            after = (create_ns, last_id)
        rows = self.store.list_debates(tenant, state, after, page_size + 1)
        token = ""
        if len(rows) > page_size:
            rows = rows[:page_size]
            token = encode_page_token(rows[-1].create_ns, rows[-1].debate_id, state)
        return rows, token

    def last_sequence(self, row: DebateRow) -> int:
        """The debate's last announced event: the live log's, else the store's."""
        live = self.hub.get(row.debate_id)
        return max(live.durable, row.last_sequence) if live is not None else row.last_sequence

    def queue_position(self, row: DebateRow) -> int:
        """A QUEUED debate's 1-based place in the queue (on a shared store the cluster's), else 0."""
        if row.state != S.DEBATE_STATE_QUEUED:
            return 0
        return self.store.queue_position(row) if self.store.shared else self.scheduler.position(row.debate_id)

    def transcript(self, debate_id: str) -> tuple[list[common.Turn], list[common.RoundAssessment]]:
        """The stored turns and round assessments of a debate."""
        return [t for t, _ in self.store.turns(debate_id)], [a for a, _ in self.store.assessments(debate_id)]

    # ==== human seats (issue 19 part 3; human_seat.py) ============================================
    def submit_turn(
        self, tenant: str, debate_id: str, participant: str, round_number: int, text: str, request_id: str
    ) -> tuple[DebateRow, int, bool]:
        """The caller's debate, a human seat's text given (see HumanSeats.submit): the row, the
        text's tokens and whether it was a retry."""
        row = self.get_row(tenant, debate_id)
        tokens, duplicate = self.human.submit(row, participant, round_number, text, request_id)
        return row, tokens, duplicate

    # ==== stopping rules (stopping.py) ============================================================
    def stops(self, debate_ids: list[str]) -> dict[str, pb.DebateStop]:
        """The stops of those debates a stopping rule ended early (stopping.py), by debate id."""
        return self.store.stops(debate_ids)

    # ==== running debates (lifecycle.py) =========================================================
    def start(self, tenant: str, debate_id: str) -> DebateRow:
        """The caller's debate, started or queued (see Lifecycle.start)."""
        return self.lifecycle.start(self.get_row(tenant, debate_id))

    async def cancel(self, tenant: str, debate_id: str, reason: str) -> DebateRow:
        """The caller's debate, cancelled (see Lifecycle.cancel)."""
        return await self.lifecycle.cancel(self.get_row(tenant, debate_id), reason)

    # ==== verdict versions (verdicts.py) =========================================================
    def verdict_versions(self, row: DebateRow) -> list[pb.VerdictVersion]:
        """The debate's finished verdict versions, oldest first."""
        return self.verdicts.versions(row)

    async def rejudge(
        self, tenant: str, debate_id: str, judge: common.JudgeConfig, request_id: str
    ) -> tuple[pb.VerdictVersion, list[pb.VerdictAgreement]]:
        """The caller's completed debate judged again (see VerdictVersions.rejudge)."""
        return await self.verdicts.rejudge(self.get_row(tenant, debate_id), judge, request_id)

    def continue_debate(
        self, tenant: str, debate_id: str, extra_rounds: int, question: str, request_id: str
    ) -> tuple[DebateRow, int]:
        """The caller's completed debate continued with `extra_rounds` more rounds (see
        VerdictVersions.begin_continuation and Lifecycle.continue_debate): the debate, and the
        verdict version it will end with. A retried request_id returns the debate as it is."""
        row = self.get_row(tenant, debate_id)
        first_round = row.config.format.round_limit + 1
        row, version, new = self.verdicts.begin_continuation(row, extra_rounds, question, request_id)
        if new:
            row = self.lifecycle.continue_debate(row, first_round)
        return row, version

    async def resume_all(self) -> int:
        """Resumes the debates a previous process left RUNNING or QUEUED; their number."""
        return await self.lifecycle.resume_all()

    async def shutdown(self) -> None:
        """Stops generating; running debates stay RUNNING in the store and resume on the next start."""
        await self.lifecycle.shutdown()
