"""A debate's lifecycle once it exists: admitted to run or queued, launched, played round by
round, resumed after a restart, cancelled, stopped at shutdown, and ended.

States: CREATED -> RUNNING (or QUEUED -> RUNNING when a slot frees) -> COMPLETED, FAILED,
CANCELLED or BUDGET_EXCEEDED. Every change is stored, then announced (DebateStateChanged,
DebateCompleted or DebateFailed), then committed (an ending whose commit fails is committed
by the hub's next tick: a debate ends once).

Playing a debate: for each round, its turns (turns.py) run in order (the sequential format) or
all at once; the round's assessment (judging.py) then runs beside the next round, and its
failure ends the debate at once. After the last round the verdict, then the final cost. Each
round is played in a task of its own (`run.round_task`) that a stopping rule passing on an
assessment cancels (stopping.py): no further round, then DebateStopped, the verdict over the
rounds played, and the final cost.

Resuming after a restart rebuilds a run from the store: completed turns are kept (their usage
re-sent if it was not recorded, under the same idempotent key), an attempt left open is void
(its reservation released, a TurnFailed(ORCHESTRATOR_RESTARTED) logged, and the turn runs
again as the next attempt), assessments and a verdict stored but not recorded are recorded,
not asked again. At shutdown running debates stay RUNNING in the store, to be resumed.

Several replicas on one PostgreSQL: a replica runs or queues a debate only while it holds the
debate's lease (store.py, store_postgres.py). `start` claims it, `resume_all` claims the
runnable debates whose lease is free, and on a shared store a heartbeat (`tend_leases`, every
min(lease/3, 0.5) s) renews the leases held, stops the debates whose lease another replica took
(no ending is logged: the new owner goes on; the store refuses their writes) and takes over the
debates whose lease lapsed, resuming them as a restart does. Limits hold for the cluster: at most
`running_limit` debates run on each replica, and the QUEUED debates of the database are one
queue of at most `queue_limit` for all replicas (`_start_in_cluster`); a replica claims from it
only into its free slots, lapsed RUNNING debates first. A cancel of a debate another replica
runs is forwarded to it (`_forward_cancel`, `cancel_requested`).

Traces (when a tracer is given, services.common.tracing): a debate's run is one span, `debate`
(attributes debate.id, debate.resumed), whose children are its turns (turns.py), their model
calls, and the judge's and accounting's calls. It runs after StartDebate has answered, so its
parent is the context StartDebate was called in (the StartDebate server span, itself in the
caller's trace when the caller sent a `traceparent`, as CreateDebate's then is). When CreateDebate
was in another trace (a caller that sends no `traceparent`) and on this replica, the `debate` span
links to CreateDebate's span. The debates row keeps the trace (`trace_context`, a W3C
`traceparent`, schema version 9), written only with traces on and in a statement the debate makes
anyway: a queued debate stores StartDebate's context with its QUEUED state, so whichever replica
(or process, after a restart) launches it continues StartDebate's trace (a debate queued here
keeps the context in memory too, and skips the read); a run stores its `debate` span's context
with its RUNNING state. A debate resumed after a restart, taken over from another replica, or
continued (ContinueDebate) starts a new `debate` span with debate.resumed=true (a root, or in
ContinueDebate's trace) that links to that first run's `debate` span.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from opentelemetry.context import Context, get_current
from opentelemetry.trace import Link, Span, SpanContext, Tracer, get_current_span, set_span_in_context, use_span

from services.common.errors import DomainError, FailedPrecondition
from services.common.logs import debate_id_var
from services.common.money import ZERO, usd
from services.common.trace_context import context_from_traceparent, traceparent
from services.orchestrator.context import ContextBuilder
from services.orchestrator.events import EventHub
from services.orchestrator.judging import Judging
from services.orchestrator.metrics import OrchestratorMetrics
from services.orchestrator.peers import Accounting
from services.orchestrator.run import TERMINAL, BudgetExceeded, DebateRun, S, State, turn_key
from services.orchestrator.scheduler import RUNNING, Scheduler, queue_full
from services.orchestrator.stopping import Stopping
from services.orchestrator.store import DebateRow, LeaseLost, Store, StoreUnavailable
from services.orchestrator.turns import TurnRunner
from services.orchestrator.verdicts import apply_continuations, store_ending_version

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 5.0  # a cancel forwarded to the owner waits this long for its ending
CREATED_SPANS_KEPT = 10_000  # CreateDebate spans kept for a link from their debate's trace


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ends the debate when several turns of a round failed at once."""
    leaves: list[BaseException] = []
    stack: list[BaseExceptionGroup[BaseException]] = [group]
    while stack:
        for error in stack.pop().exceptions:
            if isinstance(error, BaseExceptionGroup):
                stack.append(error)
            else:
                leaves.append(error)
    for kind in (BudgetExceeded, DomainError):
        for error in leaves:
            if isinstance(error, kind):
                return error
    return leaves[0]


class Lifecycle:
    """Runs admitted debates, one task each (`runs`, by debate id)."""

    def __init__(
        self,
        store: Store,
        hub: EventHub,
        scheduler: Scheduler,
        accounting: Accounting,
        turns: TurnRunner,
        judging: Judging,
        count_tokens: Callable[[str, str], int] | None = None,
        lease_seconds: float = 5.0,
        metrics: OrchestratorMetrics | None = None,
        tracer: Tracer | None = None,
    ):
        self.store = store
        self.tracer = tracer  # None: traces off
        # The trace context of StartDebate for a debate queued here, its `debate` span's parent.
        self._start_contexts: dict[str, Context] = {}
        # The CreateDebate span of a debate created here and not yet run (the newest
        # CREATED_SPANS_KEPT), linked from its `debate` span when it is in another trace.
        self._created_spans: OrderedDict[str, SpanContext] = OrderedDict()
        self.metrics = metrics  # None: metrics off
        self.hub = hub
        self.scheduler = scheduler
        self.accounting = accounting
        self.turns = turns
        self.judging = judging
        self.stopping = Stopping(store, hub, turns)
        self.count_tokens = count_tokens
        self.runs: dict[str, DebateRun] = {}
        self.lease_seconds = lease_seconds
        self._heartbeat: asyncio.Task[None] | None = None

    # ==== transitions asked for by callers ==================================================
    def start(self, row: DebateRow) -> DebateRow:
        """Runs a created debate now, or queues it; a running or queued one is left as it is.
        Raises FailedPrecondition (DEBATE_NOT_STARTABLE) for any other state and QueueFull."""
        debate_id = row.debate_id
        if row.state in (S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_QUEUED):
            return row  # a retried start changes nothing
        if row.state != S.DEBATE_STATE_CREATED:
            raise FailedPrecondition(
                f"debate is {S.Name(row.state)}; only a created debate can start", reason="DEBATE_NOT_STARTABLE"
            )
        if self.store.shared:
            return self._start_in_cluster(row)
        admitted = self.scheduler.admit(debate_id)  # QueueFull before any lease is taken
        if not self.store.claim(debate_id):
            self._start_queued(self.scheduler.finish(debate_id))
            raise FailedPrecondition("debate is run by another replica", reason="DEBATE_NOT_STARTABLE")
        self.hub.open_log(debate_id, row.last_sequence).active = True
        if admitted == RUNNING:
            self._launch(row, parent=self._caller_context())
        else:
            if self.tracer is not None:
                self._start_contexts[debate_id] = get_current()
            self.store.update_debate(
                debate_id, state=S.DEBATE_STATE_QUEUED, queue_ns=time.time_ns(), **self._trace_fields(get_current())
            )
            self.hub.emit(
                debate_id,
                state_changed=pb.DebateStateChanged(state=S.DEBATE_STATE_QUEUED, reason="waiting for a running slot"),
            )
        self.hub.commit()
        return self.store.existing_debate(debate_id)

    def continue_debate(self, row: DebateRow, first_round: int) -> DebateRow:
        """Runs a completed debate again from `first_round` (verdicts.py stored its continuation in
        the open transaction): RUNNING at once, beside the running limit as a resumed debate is,
        its run rebuilt from the store as after a restart (nothing played is played again).
        The caller holds the debate's lease (VerdictVersions.begin_continuation claimed it)."""
        debate_id = row.debate_id
        self.store.update_debate(debate_id, state=S.DEBATE_STATE_RUNNING)
        self.scheduler.run_now(debate_id)
        self.hub.open_log(debate_id).active = True
        reason = f"continued from round {first_round} to {row.config.format.round_limit}"
        self._launch(row, resumed=True, parent=self._caller_context(), resume_reason=reason)
        self.hub.commit()
        return self.store.existing_debate(debate_id)

    def _start_in_cluster(self, row: DebateRow) -> DebateRow:
        """`start` on a shared store: at most `running_limit` debates run on this replica, and one
        queue of at most `queue_limit` QUEUED debates serves the whole cluster (the debates
        table; admission serialised by `Store.admit_queued`). A queued debate holds no lease:
        a replica with a free slot claims the oldest (`claim_runnable`), at once when one of its
        own debates ends, and at every heartbeat."""
        debate_id = row.debate_id
        if self._free_slots() > 0:
            if not self.store.claim(debate_id):
                raise FailedPrecondition("debate is run by another replica", reason="DEBATE_NOT_STARTABLE")
            self.scheduler.run_now(debate_id)
            self.hub.open_log(debate_id, row.last_sequence).active = True
            self._launch(row, parent=self._caller_context())
            self.hub.commit()
            return self.store.existing_debate(debate_id)
        if not self.store.admit_queued(self.scheduler.queue_limit):
            self.hub.commit()  # ends the admission's transaction (and its lock) now
            raise queue_full(self.scheduler.queue_limit)
        self.hub.open_log(debate_id, row.last_sequence)
        self.store.update_debate(
            debate_id, state=S.DEBATE_STATE_QUEUED, queue_ns=time.time_ns(), **self._trace_fields(get_current())
        )
        self.hub.emit(
            debate_id,
            state_changed=pb.DebateStateChanged(state=S.DEBATE_STATE_QUEUED, reason="waiting for a running slot"),
        )
        self.hub.commit()
        self.hub.follow(debate_id)  # whichever replica claims it writes its events from now on
        return self.store.existing_debate(debate_id)

    def _free_slots(self) -> int:
        return self.scheduler.running_limit - len(self.scheduler.running)

    async def cancel(self, row: DebateRow, reason: str) -> DebateRow:
        """Ends a debate as CANCELLED (a running one once its task has settled its calls, within
        5 s). Raises FailedPrecondition (DEBATE_ALREADY_ENDED) for an ended debate.

        On a shared store, a debate another replica runs is cancelled there: the request is
        stored with the debate and a NOTIFY wakes the owner, which stops generating at once
        (its heartbeat reads the request too, as a backstop). This replica then waits up to
        CANCEL_WAIT_S for the owner's ending and answers with the debate as it is then: CANCELLED,
        or still RUNNING (with the request stored, the owner ends it, or a replica that takes
        it over does)."""
        debate_id = row.debate_id
        if row.state in TERMINAL:
            raise FailedPrecondition(f"debate already ended {S.Name(row.state)}", reason="DEBATE_ALREADY_ENDED")
        message = reason.strip()[:500] or "cancelled by the caller"
        run = self.runs.get(debate_id)
        if run is not None and run.task is not None:
            run.cancel_reason = message
            run.task.cancel()
            await asyncio.wait({run.task}, timeout=5.0)
            if debate_id in self.store.lost:
                # Its lease had been taken (this replica stalled past it) and the ending was
                # refused: the debate runs on elsewhere, so the cancel goes to its owner.
                return await self._forward_cancel(debate_id, message)
        elif self.store.shared and (row.state == S.DEBATE_STATE_RUNNING or not self.store.claim(debate_id)):
            return await self._forward_cancel(debate_id, message)
        else:  # created or queued: nothing generates yet (shared: this replica claimed its lease to end it)
            self.hub.open_log(debate_id, row.last_sequence)
            self._start_contexts.pop(debate_id, None)
            started = self.scheduler.finish(debate_id)
            self._finalize(debate_id, S.DEBATE_STATE_CANCELLED, "CANCELLED", message, None)
            self._start_queued(started)
        return self.store.existing_debate(debate_id)

    async def _forward_cancel(self, debate_id: str, message: str) -> DebateRow:
        self.store.request_cancel(debate_id, message)
        self.hub.commit()
        deadline = time.monotonic() + CANCEL_WAIT_S
        while True:
            row = self.store.existing_debate(debate_id)
            if row.state in TERMINAL or time.monotonic() >= deadline:
                return row
            await asyncio.sleep(0.05)

    def cancel_requested(self, debate_id: str, reason: str) -> None:
        """Another replica asked to cancel a debate (its NOTIFY, or the heartbeat's read): if it
        runs here, its generation stops now and it ends CANCELLED."""
        run = self.runs.get(debate_id)
        if run is not None and run.task is not None and not run.task.done() and run.cancel_reason is None:
            log.info("debate %s: cancelled through another replica", debate_id)
            run.cancel_reason = reason or "cancelled by the caller"
            run.task.cancel()

    async def resume_all(self) -> int:
        """Picks up every debate that was RUNNING or QUEUED when the process stopped (on a shared
        store: whose lease is free), and keeps the leases from then on; their number."""
        if self.store.shared:
            self.store.listen(self.hub.notified, self.cancel_requested)
        resumed = self._adopt(self._claim_runnable())
        if self.store.shared and self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._keep_leases(), name="debate-leases")
        return resumed

    def _claim_runnable(self) -> list[DebateRow]:
        """The runnable debates this replica takes: on a shared store at most its free slots."""
        return self.store.claim_runnable(self._free_slots() if self.store.shared else None)

    def _adopt(self, rows: list[DebateRow]) -> int:
        """Runs (or queues) claimed debates, a RUNNING one from its last completed turn (on a
        shared store a QUEUED one starts: it was claimed for a free slot)."""
        for row in rows:
            if row.state in TERMINAL:  # ended by another replica as this one claimed it (a cancelled queued debate)
                self.store.release(row.debate_id)
                continue
            self.hub.open_log(row.debate_id, row.last_sequence).active = True
            if row.state == S.DEBATE_STATE_RUNNING:
                if self.store.shared and self.metrics is not None:
                    self.metrics.lease_takeovers.inc()
                self.scheduler.run_now(row.debate_id)
                self._launch(row, resumed=True)
            elif self.store.shared:
                self.scheduler.run_now(row.debate_id)
                self._launch(row)
            else:
                self.scheduler.admit(row.debate_id, force=True)
        self._start_queued()
        self.hub.commit()
        if rows:
            log.info("resumed %d debates", len(rows))
        return len(rows)

    async def _keep_leases(self) -> None:
        interval = min(self.lease_seconds / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            try:
                self.tend_leases()
            except Exception:  # the next beat tries again; a lease lapsing meanwhile moves its debate
                log.exception("could not renew or claim debate leases")

    def tend_leases(self) -> int:
        """One heartbeat: renews the leases held, stops the debates whose lease was lost, takes
        over the runnable debates whose lease lapsed; the number taken over."""
        self.store.renew()
        self._drop_lost()
        for debate_id, reason in self.store.cancel_requests.items():
            self.cancel_requested(debate_id, reason)
        taken = self._adopt(self._claim_runnable())
        self._drop_lost()  # the commit may have found more
        return taken

    def _claim_queued(self) -> None:
        """A slot freed here: the oldest queued debate of the cluster is claimed at once."""
        try:
            self._adopt(self._claim_runnable())
        except Exception:  # the heartbeat claims it instead
            log.exception("could not claim a queued debate")

    def _drop_lost(self) -> None:
        """Stops here, without an ending, the debates another replica owns now."""
        for debate_id in [d for d in self.store.lost if d in self.runs or d in self.scheduler.queue]:
            log.warning("debate %s: its lease was taken by another replica; stopped here", debate_id)
            if self.metrics is not None:
                self.metrics.fencing_refusals.inc()
            run = self.runs.pop(debate_id, None)
            if run is not None:
                run.shutting_down = True  # ends without an ending: the new owner goes on
                if run.task is not None:
                    run.task.cancel()
            self.hub.drop(debate_id)
            self._start_queued(self.scheduler.finish(debate_id))

    async def shutdown(self) -> None:
        """Stops generating; running debates stay RUNNING in the store and resume on the next start.
        With replicas their leases are handed over: given up with the last commit (the hub's, as
        the server stops), so another replica takes them at its next heartbeat rather than after
        LEASE_SECONDS. A run that did not stop within 5 s keeps its lease until it lapses."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        tasks = []
        for run in self.runs.values():
            run.shutting_down = True
            if run.task is not None:
                run.task.cancel()
                tasks.append(run.task)
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        for debate_id, run in self.runs.items():
            if run.task is None or run.task.done():
                self.store.release(debate_id)

    def created(self, debate_id: str) -> None:
        """A debate was created in the current span (CreateDebate's): remembered for its `debate`
        span's link, when traces are on."""
        if self.tracer is None:
            return
        self._created_spans[debate_id] = get_current_span().get_span_context()
        if len(self._created_spans) > CREATED_SPANS_KEPT:
            self._created_spans.popitem(last=False)

    def _caller_context(self) -> Context | None:
        """The trace context of the call that starts a debate now (None: traces off)."""
        return get_current() if self.tracer is not None else None

    def _trace_fields(self, context: Context) -> dict[str, str]:
        """The `trace_context` column to store with a debate's update: `context`'s traceparent when
        traces are on, nothing when they are off (nothing written)."""
        return {} if self.tracer is None else {"trace_context": traceparent(context)}

    def _debate_span(self, row: DebateRow, resumed: bool, parent: Context | None) -> Span | None:
        """A debate's `debate` span, started now (None: traces off; see the module docstring).
        `parent` None, or a resumed run: the debate's stored trace context is read (one read):
        a new run continues it (StartDebate's, stored when the debate was queued), a resumed one
        links to it (the first run's `debate` span)."""
        if self.tracer is None:
            return None
        links = []
        if resumed or parent is None:
            stored = context_from_traceparent(self.store.trace_context(row.debate_id))
            if resumed and stored is not None:
                links.append(Link(get_current_span(stored).get_span_context()))
            elif parent is None:
                parent = stored
        context = parent if parent is not None else Context()  # an empty context: a new trace
        created = self._created_spans.pop(row.debate_id, None)
        in_trace = get_current_span(context).get_span_context().trace_id
        if created is not None and created.is_valid and created.trace_id != in_trace:
            links.append(Link(created))
        return self.tracer.start_span(
            "debate",
            context=context,
            links=links,
            attributes={
                "debate.id": row.debate_id,
                "debate.resumed": resumed,
                "debate.round_limit": row.config.format.round_limit,
                "debate.participant_count": len(row.config.participants),
            },
        )

    def _launch(
        self, row: DebateRow, *, resumed: bool = False, parent: Context | None = None, resume_reason: str = ""
    ) -> None:
        """Runs a debate in a task of its own; `parent`: the trace context of its `debate` span
        (None: the one stored with the debate, else a new trace); `resume_reason`: why a resumed
        run resumes (default: a restart). A new run stores its `debate` span's context with its
        RUNNING state (one statement), for a later resumed run's link."""
        context = ContextBuilder(row.config, self.count_tokens)
        run = DebateRun(debate_id=row.debate_id, config=row.config, context=context)
        if resume_reason:
            run.resume_reason = resume_reason
        apply_continuations(self.store, run)
        span = self._debate_span(row, resumed, parent)  # before the run is registered: it may read the store
        self.runs[row.debate_id] = run
        if not resumed:
            if self.metrics is not None:
                self.metrics.debates_started.inc()
            fields = {} if span is None else self._trace_fields(set_span_in_context(span))
            self.store.update_debate(row.debate_id, state=S.DEBATE_STATE_RUNNING, **fields)
            self.hub.emit(row.debate_id, state_changed=pb.DebateStateChanged(state=S.DEBATE_STATE_RUNNING))
        self.hub.open_log(row.debate_id).active = True
        run.task = asyncio.get_running_loop().create_task(
            self._traced_run(run, resumed, span), name=f"debate-{row.debate_id}"
        )

    def _start_queued(self, admitted: list[str] | None = None) -> None:
        """Launches debates the scheduler moved from the queue into running slots."""
        for debate_id in self.scheduler.fill() if admitted is None else admitted:
            row = self.store.get_debate(debate_id)
            parent = self._start_contexts.pop(debate_id, None)
            if row is not None and row.state == S.DEBATE_STATE_QUEUED:
                self._launch(row, parent=parent)

    # ==== one debate ===========================================================================
    async def _traced_run(self, run: DebateRun, resumed: bool, span: Span | None) -> None:
        """`_run`, inside the debate's `debate` span (`_debate_span`) when traces are on, ended with it."""
        if span is None:
            await self._run(run, resumed)
            return
        with use_span(span, end_on_exit=True):
            await self._run(run, resumed)

    async def _run(self, run: DebateRun, resumed: bool) -> None:
        """The debate's task: recover (after a restart), play, and end however it ends."""
        debate_id_var.set(run.debate_id)
        try:
            if resumed:
                await self._recover(run)
            if run.config.HasField("budget"):
                await self.accounting.set_debate_budget(run.debate_id, run.config.budget)
            await self._play(run)
        except asyncio.CancelledError:
            if run.shutting_down:
                raise
            await self.turns.settle_inflight(run, "CANCELLED")
            await self._end(run, S.DEBATE_STATE_CANCELLED, "CANCELLED", run.cancel_reason or "cancelled")
        except LeaseLost:  # another replica took the debate over: no ending here, it goes on there
            log.warning("debate %s: its lease was taken by another replica; stopped here", run.debate_id)
            self.hub.drop(run.debate_id)
        except BudgetExceeded as error:
            await self.turns.settle_inflight(run, "BUDGET_EXCEEDED")
            await self._end(run, S.DEBATE_STATE_BUDGET_EXCEEDED, "BUDGET_EXCEEDED", error.message)
        except DomainError as error:
            log.warning("debate failed: %s: %s", error.reason, error.message)
            await self.turns.settle_inflight(run, error.reason)
            await self._end(run, S.DEBATE_STATE_FAILED, error.reason, error.message)
        except Exception as error:  # a bug outside the turns (a turn's own errors are typed, turns.py)
            log.exception("debate failed unexpectedly")
            try:
                await self.turns.settle_inflight(run, "INTERNAL")
            except Exception:
                log.exception("could not settle the calls in flight")
            await self._end(run, S.DEBATE_STATE_FAILED, "INTERNAL", f"internal error: {type(error).__name__}")
        finally:
            self._cancel_assessments(run)
            if not run.shutting_down:
                self.runs.pop(run.debate_id, None)
                self._start_queued(self.scheduler.finish(run.debate_id))
                if self.store.shared:
                    asyncio.get_running_loop().call_soon(self._claim_queued)

    @staticmethod
    def _cancel_assessments(run: DebateRun) -> None:
        for task in run.assess_tasks.values():
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: it was reported through the debate's end
            task.cancel()

    async def _recover(self, run: DebateRun) -> None:
        """Rebuilds a debate's run from the store after a restart."""
        debate_id = run.debate_id
        row = self.store.existing_debate(debate_id)
        run.current_round = row.current_round
        stopped = self.store.stop(debate_id)
        if stopped is not None:  # a stopping rule passed before the restart: no round is played
            run.stop, run.stop_announced = stopped
        unrecorded = []
        for turn, recorded in self.store.turns(debate_id):
            if turn.finish_reason == common.FINISH_REASON_CANCELLED:
                continue  # a stopped round's partial text (stopping.py): settled, no part of the transcript
            run.turns[(turn.round_number, turn.participant)] = turn
            run.transcript.add(turn.round_number, turn.participant, turn.text)
            if not recorded:
                unrecorded.append(turn)
        run.last_attempt = self.store.last_attempts(debate_id)
        for assessment, recorded in self.store.assessments(debate_id):
            if recorded:
                run.assessments[assessment.round_number] = assessment
            else:
                run.unrecorded_assessments[assessment.round_number] = assessment
        await self._void_open_attempts(run)
        self.hub.emit(
            debate_id,
            state_changed=pb.DebateStateChanged(state=S.DEBATE_STATE_RUNNING, reason=run.resume_reason),
        )
        run.restore_cost(await self.accounting.debate_cost(debate_id))
        self.hub.commit()
        for turn in unrecorded:
            await self.turns.record(run, turn, turn_key(debate_id, turn.round_number, turn.participant, turn.attempt))

    async def _void_open_attempts(self, run: DebateRun) -> None:
        """Attempts the crash left open: closed, and logged as failed unless the turn was stored
        (the attempt had in fact finished: its reservation is released, its usage re-sent by
        `turns.record`). A void attempt is charged as an estimate if its text had reached the
        event log, else its reservation is released (turns.settle_interrupted)."""
        debate_id = run.debate_id
        void = []
        left_open = self.store.open_attempts(debate_id)
        for round_number, name, attempt, reservation_id in left_open:
            if (round_number, name) in run.turns:
                if reservation_id:
                    await self.accounting.release_budget(reservation_id)
            else:
                void.append((round_number, name, attempt, reservation_id))
        charged = set(await self.turns.settle_interrupted(run, void)) if void else set()
        for round_number, name, attempt, _ in left_open:
            self.store.close_attempt(debate_id, round_number, name, attempt)
        for round_number, name, attempt, _ in void:
            self.hub.emit(
                debate_id,
                turn_failed=pb.TurnFailed(
                    round_number=round_number,
                    participant=name,
                    attempt=attempt,
                    reason="ORCHESTRATOR_RESTARTED",
                    message=(
                        "the orchestrator restarted (or another replica took the debate over) during this attempt; "
                        "its text is void"
                        + (
                            " (the provider had answered: charged as an estimate of what it streamed)"
                            if (round_number, name, attempt) in charged
                            else ""
                        )
                    ),
                    will_retry=run.stop is None,  # a stopped debate plays no more turns
                ),
            )

    async def _play(self, run: DebateRun) -> None:
        """Every round not yet played, the assessments, the verdict, then completion."""
        config = run.config
        rounds = config.format.round_limit
        first = 1
        while first <= rounds and all((first, p.name) in run.turns for p in config.participants):
            first += 1
        for r in range(1, first):
            if r not in run.assessments:
                run.assess_tasks[r] = asyncio.create_task(self._assess(run, r))
        if run.stop is None:
            self.stopping.check_recorded(run)
        for r in range(first, rounds + 1):
            if run.stop is not None or not await self._play_stoppable(run, r):
                break  # a stopping rule ended the debate (stopping.py)
            # An earlier round's failed assessment ends the debate before this round's is asked
            # for: a judge request started now would run (and bill) while the debate ends.
            self.judging.raise_failure(run)
            run.assess_tasks[r] = asyncio.create_task(self._assess(run, r))
        for r in range(1, rounds + 1):
            if r in run.assess_tasks:
                await run.assess_tasks[r]
        self.stopping.announce(run)
        verdict = await self.judging.verdict(run)
        await self._complete(run, verdict)

    async def _assess(self, run: DebateRun, r: int) -> common.RoundAssessment:
        """Round `r`'s assessment, then the stopping rules on it."""
        assessment = await self.judging.assess(run, r)
        self.stopping.on_assessed(run, assessment)
        return assessment

    async def _play_stoppable(self, run: DebateRun, r: int) -> bool:
        """Plays round `r` in a task a stop can cancel; False when a stop cancelled it (its calls
        settled, stopping.py). A cancel of the debate itself goes on as a cancel."""
        run.round_task = asyncio.create_task(self._play_round(run, r), name=f"debate-{run.debate_id}-round-{r}")
        try:
            await run.round_task
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if run.stop is None or (task is not None and task.cancelling()):
                raise
            await self.stopping.settle_round(run)
            return False
        finally:
            run.round_task = None
        return True

    async def _play_round(self, run: DebateRun, r: int) -> None:
        """Round `r`'s turns not yet taken: in order (sequential format) or all at once."""
        config = run.config
        if run.current_round < r:
            run.current_round = r
            self.store.update_debate(run.debate_id, current_round=r)
            self.hub.emit(
                run.debate_id,
                round_started=pb.RoundStarted(round_number=r, participants=[p.name for p in config.participants]),
            )
        todo = [p for p in config.participants if (r, p.name) not in run.turns]
        if config.format.turn_order == common.TURN_ORDER_SEQUENTIAL or len(todo) == 1:
            for participant in todo:
                await self.turns.run(run, r, participant)
            return
        try:
            async with asyncio.TaskGroup() as group:
                for participant in todo:
                    group.create_task(self.turns.run(run, r, participant))
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    # ==== endings ==================================================================================
    async def _final_cost(self, run: DebateRun) -> common.DebateCost:
        """The ledger's cost of the debate: the one read with the verdict's records when nothing
        was recorded since (`run.final_cost`), else asked of accounting; the run's own total
        when accounting cannot answer."""
        if run.final_cost is not None:
            return run.final_cost
        try:
            return await self.accounting.debate_cost(run.debate_id)
        except DomainError as error:
            log.warning("final cost unavailable: %s", error.message)
            return common.DebateCost(debate_id=run.debate_id, total=usd(run.total), usage=run.usage)

    async def _complete(self, run: DebateRun, verdict: common.Verdict) -> None:
        await store_ending_version(self.store, self.hub, self.judging, run, verdict)
        cost = await self._final_cost(run)
        self.store.update_debate(
            run.debate_id, state=S.DEBATE_STATE_COMPLETED, cost=cost.SerializeToString(), cost_amount=cost.total.amount
        )
        self.hub.emit(
            run.debate_id, cost_updated=pb.CostUpdated(total=cost.total, usage=cost.usage, budget=cost.budget)
        )
        self.hub.emit(run.debate_id, debate_completed=pb.DebateCompleted(verdict=verdict, cost=cost))
        if self.metrics is not None:
            self.metrics.debate_ended(S.DEBATE_STATE_COMPLETED, "VERDICT")
        self.hub.close(run.debate_id)
        self._commit_ending(run.debate_id)

    async def _end(self, run: DebateRun, state: State, reason: str, message: str) -> None:
        await self._settle_assessments(run)
        cost = await self._final_cost(run)
        self._finalize(run.debate_id, state, reason, message, cost)

    @staticmethod
    async def _settle_assessments(run: DebateRun) -> None:
        """Judge requests still under way when a debate ends otherwise (a round is judged beside
        the next one) are let finish rather than cancelled: the provider bills their calls, and
        `Judging.assess` records them (a failed request's from its BilledCalls) before it
        returns, so the final cost has them. Bounded by the judge client's own deadlines
        (RPC_TIMEOUT_SECONDS a try, JUDGE_ATTEMPTS tries)."""
        pending = [task for task in run.assess_tasks.values() if not task.done()]
        if pending:
            await asyncio.wait(pending)

    def _finalize(
        self, debate_id: str, state: State, reason: str, message: str, cost: common.DebateCost | None
    ) -> None:
        """Stores the ending, logs DebateFailed (cancelled, failed, over budget) and closes the log."""
        cost = cost or common.DebateCost(debate_id=debate_id, total=usd(ZERO))
        self.store.update_debate(
            debate_id,
            state=state,
            end_reason=f"{reason}: {message}",
            cost=cost.SerializeToString(),
            cost_amount=cost.total.amount or "0",
        )
        self.hub.emit(debate_id, debate_failed=pb.DebateFailed(state=state, reason=reason, message=message, cost=cost))
        if self.metrics is not None:
            self.metrics.debate_ended(state, reason)
        self.hub.close(debate_id)
        self._commit_ending(debate_id)

    def _commit_ending(self, debate_id: str) -> None:
        """Commits a debate's ending now. Nothing outside waits on it: if the store fails, the
        ending stays pending and the hub's next tick commits it (announced only then), rather
        than a second, contradictory ending being logged. The lease goes with the ending."""
        self.store.release(debate_id)
        try:
            self.hub.commit()
        except StoreUnavailable as error:
            log.warning("the ending of debate %s waits for the next commit: %s", debate_id, error.message)
