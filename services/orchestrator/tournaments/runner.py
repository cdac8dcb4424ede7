"""`Tournaments`: the tournaments' domain API (create, start, get, list, cancel, watch, the
leaderboard) and one task per running tournament.

A running tournament's task plays its matches in order, at most `parallel_matches` at once:
1. Launch a match: its two debates are created through the debate engine (`Engine.create`, its
   validation, owned by the tournament's tenant) under request ids made from the tournament,
   the match and the leg, and their ids are stored in the match row (RUNNING) and committed
   BEFORE either debate starts. Then both are started (`Lifecycle.start`: the scheduler runs
   or queues them; a full queue leaves a debate CREATED, started again at the next tick).
2. Every tick (`tick_s`) it reads its running matches' debates from the store; when both have
   ended, the match is DECIDED (both completed with a verdict: results.py) or FAILED.
3. When every match has been played it ends COMPLETED.

Budget: each debate is capped at `debate_budget` (accounting refuses a reservation past it).
A match is launched only while budget - (cost of the debates ended) - 2 x debate_budget x
(matches under way) >= 2 x debate_budget: the caps of the debates under way are held back
until they end, so the tournament cannot spend past its budget. When that fails with no match
under way, the remaining matches are SKIPPED and it ends BUDGET_EXHAUSTED, saying why.

Restart: a tournament left RUNNING resumes here (`resume_all`, after the engine resumed its
debates). A match whose debates were stored goes on with those debates; a match left PENDING
is launched again, and its debates' request ids return the debates a crash may have created
before the match row was written. No match is played twice, and no debate is created twice.

Cost: the sum of its debates' costs (accounting's figures: a debate's stored final cost once it
has ended, else accounting's running figure), with tokens, and by model.

Replicas: on a shared store a running tournament is driven by the one replica that holds its
lease, a row of `debate_leases` under the tournament's id, claimed, renewed by the lifecycle's
heartbeat and fenced like a debate's (its writes are keyed by the tournament id, so a replica
that lost the lease has them refused). So `parallel_matches` and the budget rule hold for the
cluster. A replica whose lease was taken stops driving it at its next tick; every replica tries,
every lease period, to adopt the RUNNING tournaments nobody holds (`adopt`), so a tournament
outlives the replica that drove it. The lease is given up with the tournament's ending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import tournament_pb2 as tpb

from services.common.errors import DomainError, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.common.money import ZERO, exact_sum, format_amount, usd
from services.common.usage import add_token_usage
from services.orchestrator.engine import MAX_REQUEST_ID, Engine
from services.orchestrator.peers import Accounting
from services.orchestrator.run import TERMINAL
from services.orchestrator.scheduler import QueueFull
from services.orchestrator.store import decode_page_token, encode_page_token
from services.orchestrator.tournaments.plan import debate_config, pairings, validate_tournament
from services.orchestrator.tournaments.ratings import METHOD, ModelRating, Outcome, fit_ratings
from services.orchestrator.tournaments.records import M, T, TournamentRecords, TournamentRow
from services.orchestrator.tournaments.results import decide, leg_result, score_of_a

log = logging.getLogger(__name__)

S = pb.DebateState
ENDED = (T.TOURNAMENT_STATE_COMPLETED, T.TOURNAMENT_STATE_CANCELLED, T.TOURNAMENT_STATE_BUDGET_EXHAUSTED)
TICK_S = 0.1


@dataclass(slots=True)
class TournamentCost:
    """The sum of a tournament's debates' costs: total (USD), tokens, and lines by model."""

    total: Decimal
    usage: common.TokenUsage
    by_model: list[common.CostLine]
    by_match: dict[int, Decimal] = field(default_factory=dict)


def leg_request_id(tournament_id: str, match_index: int, leg: int) -> str:
    """The request id of a match's debate: the same debate for every retry, after any restart."""
    return f"tournament/{tournament_id}/match/{match_index}/leg/{leg}"


class Tournaments:
    """The tournaments of one orchestrator process, over `engine`'s store and debates."""

    def __init__(self, engine: Engine, accounting: Accounting, *, tick_s: float = TICK_S, lease_s: float = 5.0):
        """`tick_s`: how often a running tournament is looked at; `lease_s`: the lease period
        (LEASE_SECONDS), how often the RUNNING tournaments nobody drives are adopted (a shared store)."""
        self.engine = engine
        self.store = engine.store
        self.accounting = accounting
        self.records = TournamentRecords(engine.store)
        self.tick_s = tick_s
        self.lease_s = lease_s
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._adopting: asyncio.Task[None] | None = None

    # ==== stored tournaments ===================================================================
    def create(self, tenant: str, config: tpb.TournamentConfig, request_id: str) -> TournamentRow:
        """Stores a CREATED tournament and its PENDING matches, committed. A request_id seen before
        for this tenant returns that tournament. Raises InvalidArgument listing every problem."""
        if len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument([FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID} characters")])
        if request_id:
            existing = self.records.find_by_request(tenant, request_id)
            if existing is not None:
                return existing
        normalised = validate_tournament(config, self.engine.limits, self.engine.model_rules)
        now = time.time_ns()
        row = TournamentRow(
            tournament_id=str(uuid.uuid4()),
            tenant=tenant,
            request_id=request_id,
            config=normalised,
            state=T.TOURNAMENT_STATE_CREATED,
            create_ns=now,
            update_ns=now,
            end_reason="",
        )
        stored = self.records.insert(row, pairings(normalised))
        self.store.commit()
        return stored

    def get_row(self, tenant: str, tournament_id: str) -> TournamentRow:
        """The caller's tournament; another tenant's does not exist for them (NotFound)."""
        row = self.records.get(tournament_id) if tournament_id else None
        if row is None or row.tenant != tenant:
            raise NotFound(f"tournament {tournament_id!r} not found", reason="TOURNAMENT_NOT_FOUND")
        return row

    def matches(self, tournament_id: str) -> list[tpb.Match]:
        return self.records.matches(tournament_id)

    def list_page(self, tenant: str, page_size: int, page_token: str) -> tuple[list[TournamentRow], str]:
        """A page of the tenant's tournaments, newest first, and the next page's token ("" after
        the last). InvalidArgument for a token not made here."""
        after = None
        if page_token:
            try:
                create_ns, last_id, _ = decode_page_token(page_token)
            except (ValueError, TypeError):
                raise InvalidArgument([FieldViolation("page_token", "not a token from a previous response")]) from None
            after = (create_ns, last_id)
        rows = self.records.page(tenant, after, page_size + 1)
        token = ""
        if len(rows) > page_size:
            rows = rows[:page_size]
            token = encode_page_token(rows[-1].create_ns, rows[-1].tournament_id, 0)
        return rows, token

    async def cost(self, matches: list[tpb.Match]) -> TournamentCost:
        """What the matches' debates cost, summed (see the module docstring)."""
        total: list[Decimal] = []
        usage = common.TokenUsage()
        lines: dict[str, tuple[common.CostLine, list[Decimal]]] = {}
        by_match: dict[int, Decimal] = {}
        for match in matches:
            spent = []
            for leg in match.legs:
                if not leg.debate_id:
                    continue
                cost = await self._debate_cost(leg.debate_id)
                spent.append(Decimal(cost.total.amount or "0"))
                add_token_usage(usage, cost.usage)
                for line in cost.by_model:
                    target = lines.setdefault(line.key, (common.CostLine(key=line.key), []))
                    add_token_usage(target[0].usage, line.usage)
                    target[0].calls += line.calls
                    target[0].price_source = target[0].price_source or line.price_source
                    target[1].append(Decimal(line.cost.amount or "0"))
            by_match[match.match_index] = exact_sum(spent)
            total += spent
        by_model = []
        for key in sorted(lines):
            line, amounts = lines[key]
            line.cost.CopyFrom(usd(exact_sum(amounts)))
            by_model.append(line)
        return TournamentCost(exact_sum(total), usage, by_model, by_match)

    async def _debate_cost(self, debate_id: str) -> common.DebateCost:
        row = self.store.existing_debate(debate_id)
        if row.state in TERMINAL and row.cost is not None:
            return common.DebateCost.FromString(row.cost)
        try:
            return await self.accounting.debate_cost(debate_id)
        except DomainError:
            return common.DebateCost(debate_id=debate_id, total=usd(Decimal(row.cost_amount or "0")))

    async def ratings(self, tenant: str, tournament_id: str = "") -> tuple[list[ModelRating], int]:
        """Ratings over one tournament's decided matches ("" : every tournament of the tenant's),
        and how many matches they were fitted on. NotFound for another tenant's tournament."""
        if tournament_id:
            self.get_row(tenant, tournament_id)
            decided = [m for m in self.records.matches(tournament_id) if m.state == M.MATCH_STATE_DECIDED]
        else:
            decided = self.records.decided_matches_of(tenant)
        outcomes = [Outcome(m.model_a, m.model_b, score_of_a(m)) for m in decided]
        return await asyncio.to_thread(fit_ratings, outcomes), len(outcomes)

    method = METHOD

    # ==== running tournaments ====================================================================
    def start(self, tenant: str, tournament_id: str) -> TournamentRow:
        """Starts a created tournament (a running one is left as it is). FailedPrecondition
        (TOURNAMENT_NOT_STARTABLE) for an ended one."""
        row = self.get_row(tenant, tournament_id)
        if row.state == T.TOURNAMENT_STATE_RUNNING:
            return row
        if row.state != T.TOURNAMENT_STATE_CREATED:
            raise FailedPrecondition(
                f"tournament is {T.Name(row.state)}; only a created tournament can start",
                reason="TOURNAMENT_NOT_STARTABLE",
            )
        self.records.set_state(tournament_id, T.TOURNAMENT_STATE_RUNNING)
        self.store.commit()
        self._launch(tournament_id)
        self._notify(tournament_id)
        return self.get_row(tenant, tournament_id)

    async def cancel(self, tenant: str, tournament_id: str, reason: str) -> TournamentRow:
        """Ends a created or running tournament CANCELLED: its task stops, the debates under way
        are cancelled (what they spent stays recorded), matches not played are SKIPPED.
        FailedPrecondition (TOURNAMENT_ALREADY_ENDED) for an ended one."""
        row = self.get_row(tenant, tournament_id)
        if row.state in ENDED:
            raise FailedPrecondition(f"tournament already ended {T.Name(row.state)}", reason="TOURNAMENT_ALREADY_ENDED")
        message = reason.strip()[:500] or "cancelled by the caller"
        task = self.tasks.pop(tournament_id, None)
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
        for match in self.records.matches(tournament_id):
            for leg in match.legs:
                debate = self.store.existing_debate(leg.debate_id)
                if debate.state not in TERMINAL:
                    await self.engine.lifecycle.cancel(debate, f"tournament cancelled: {message}")
        self._settle(tournament_id, skip_pending=True)
        self._end(tournament_id, T.TOURNAMENT_STATE_CANCELLED, f"CANCELLED: {message}")
        self._notify(tournament_id)
        return self.get_row(tenant, tournament_id)

    async def resume_all(self) -> int:
        """Resumes the tournaments a previous process left RUNNING (on a shared store those whose
        lease this replica takes), and on a shared store keeps adopting the ones nobody drives;
        the number resumed now."""
        resumed = self.adopt()
        if resumed:
            log.info("resumed %d tournaments", resumed)
        if self.store.shared and self._adopting is None:
            self._adopting = asyncio.get_running_loop().create_task(self._keep_adopting(), name="tournament-leases")
        return resumed

    def adopt(self) -> int:
        """Drives here every RUNNING tournament not driven here whose lease is free (or ours);
        how many it took."""
        taken = 0
        for row in self.records.in_state(T.TOURNAMENT_STATE_RUNNING):
            if row.tournament_id not in self.tasks and self._launch(row.tournament_id):
                taken += 1
        return taken

    async def _keep_adopting(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s)
            try:
                self.adopt()
            except Exception:  # the store is away: try again at the next period
                log.exception("could not adopt the running tournaments")

    async def shutdown(self) -> None:
        """Stops the tasks; running tournaments stay RUNNING in the store, to be resumed."""
        if self._adopting is not None:
            self._adopting.cancel()
            self._adopting = None
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        self.tasks.clear()

    def _launch(self, tournament_id: str) -> bool:
        """Drives the tournament here (on a shared store once its lease is claimed); False when
        another replica holds it."""
        if tournament_id in self.tasks:
            return True
        if self.store.shared:
            claimed = self.store.claim(tournament_id)
            self.store.commit()
            if not claimed:
                return False
        self.tasks[tournament_id] = asyncio.get_running_loop().create_task(
            self._run(tournament_id), name=f"tournament-{tournament_id}"
        )
        return True

    def _end(self, tournament_id: str, state: tpb.TournamentState.ValueType, reason: str = "") -> None:
        """Stores the tournament's ending (and gives its lease up with it) and commits."""
        self.records.set_state(tournament_id, state, reason)
        self.store.release(tournament_id)
        self.store.commit()

    async def _run(self, tournament_id: str) -> None:
        try:
            while not await self._step(tournament_id):
                await asyncio.sleep(self.tick_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: the tournament stays RUNNING, resumed by the next start
            log.exception("tournament %s stopped unexpectedly", tournament_id)
        finally:
            if self.tasks.get(tournament_id) is asyncio.current_task():
                self.tasks.pop(tournament_id, None)

    async def _step(self, tournament_id: str) -> bool:
        """One tick: settle ended matches, start debates left CREATED, launch what the limits and
        the budget allow, end the tournament when nothing is left. True once it has ended."""
        if not self.store.holds(tournament_id):
            log.warning("tournament %s: its lease was taken by another replica; stopped here", tournament_id)
            return True
        row = self.records.get(tournament_id)
        if row is None or row.state != T.TOURNAMENT_STATE_RUNNING:
            self.store.release(tournament_id)
            self.store.commit()
            return True
        config = row.config
        matches = self._settle(tournament_id)
        running = [m for m in matches if m.state == M.MATCH_STATE_RUNNING]
        pending = [m for m in matches if m.state == M.MATCH_STATE_PENDING]
        for match in running:
            self._start_legs(match)
        if not running and not pending:
            self._end(tournament_id, T.TOURNAMENT_STATE_COMPLETED)
            self._notify(tournament_id)
            return True
        parallel = config.parallel_matches or 1
        while pending and len(running) < parallel:
            shortfall = await self._budget_shortfall(config, matches, len(running))
            if shortfall is not None:
                if running:
                    break  # the caps held for the matches under way may come back
                for match in pending:
                    match.state = M.MATCH_STATE_SKIPPED
                    self.records.put_match(tournament_id, match)
                self._end(tournament_id, T.TOURNAMENT_STATE_BUDGET_EXHAUSTED, shortfall)
                self._notify(tournament_id)
                return True
            match = pending.pop(0)
            self._launch_match(row, match)
            running.append(match)
        return False

    async def _budget_shortfall(
        self, config: tpb.TournamentConfig, matches: list[tpb.Match], running: int
    ) -> str | None:
        """None when the budget covers one more match (see the module docstring), else why not."""
        if not config.HasField("budget"):
            return None
        budget = Decimal(config.budget.amount)
        cap = Decimal(config.debate_budget.amount)
        ended = [m for m in matches if m.state in (M.MATCH_STATE_DECIDED, M.MATCH_STATE_FAILED)]
        spent = (await self.cost(ended)).total
        remaining = budget - spent - 2 * cap * running
        if remaining >= 2 * cap:
            return None
        return (
            f"BUDGET_EXHAUSTED: the remaining budget {format_amount(max(remaining, ZERO))} USD cannot cover a match "
            f"(two debates capped at {format_amount(cap)} USD each)"
        )

    def _launch_match(self, row: TournamentRow, match: tpb.Match) -> None:
        """Creates the match's two debates, stores their ids (committed), then starts them."""
        del match.legs[:]
        for leg in (1, 2):
            config = debate_config(row.config, match, leg)
            debate = self.engine.create(row.tenant, config, leg_request_id(row.tournament_id, match.match_index, leg))
            for_model = match.model_a if leg == 1 else match.model_b
            match.legs.add(debate_id=debate.debate_id, for_model=for_model, debate_state=debate.state)
        match.state = M.MATCH_STATE_RUNNING
        self.records.put_match(row.tournament_id, match)
        self.store.commit()  # the debates' ids are stored before either starts
        self._start_legs(match)
        self._notify(row.tournament_id)

    def _start_legs(self, match: tpb.Match) -> None:
        """Starts the match's debates still CREATED (a full queue: tried again next tick)."""
        for leg in match.legs:
            debate = self.store.existing_debate(leg.debate_id)
            if debate.state != S.DEBATE_STATE_CREATED:
                continue
            try:
                self.engine.lifecycle.start(debate)
            except QueueFull:
                log.info("debate %s waits for a place in the queue", leg.debate_id)
            except FailedPrecondition as error:  # another replica started it meanwhile (a shared store)
                log.info("debate %s not started here: %s", leg.debate_id, error.message)

    def _settle(self, tournament_id: str, *, skip_pending: bool = False) -> list[tpb.Match]:
        """Reads the running matches' debates: a match whose debates have both ended gets its
        result (DECIDED) or FAILED. With `skip_pending`, PENDING matches become SKIPPED."""
        matches = self.records.matches(tournament_id)
        changed = False
        for match in matches:
            if match.state == M.MATCH_STATE_PENDING and skip_pending:
                match.state = M.MATCH_STATE_SKIPPED
                self.records.put_match(tournament_id, match)
                changed = True
            if match.state != M.MATCH_STATE_RUNNING:
                continue
            debates = [self.store.existing_debate(leg.debate_id) for leg in match.legs]
            moved = False
            for leg, debate in zip(match.legs, debates, strict=True):
                moved |= leg.debate_state != debate.state
                leg.debate_state = debate.state
            if all(d.state in TERMINAL for d in debates):
                verdicts = [d.verdict for d in debates if d.state == S.DEBATE_STATE_COMPLETED and d.verdict is not None]
                if len(verdicts) == len(debates):
                    for leg, verdict in zip(match.legs, verdicts, strict=True):
                        leg_result(match, leg, common.Verdict.FromString(verdict))
                    decide(match)
                    match.state = M.MATCH_STATE_DECIDED
                else:
                    match.state = M.MATCH_STATE_FAILED
                moved = True
            if moved:
                self.records.put_match(tournament_id, match)
                changed = True
        if changed:
            self.store.commit()
            self._notify(tournament_id)
        return matches

    # ==== watching ==============================================================================
    def _notify(self, tournament_id: str) -> None:
        event = self._changed.pop(tournament_id, None)
        if event is not None:
            event.set()

    async def watch(self, tenant: str, tournament_id: str) -> AsyncIterator[tuple[TournamentRow, list[tpb.Match]]]:
        """The tournament and all its matches, then (row, the matches whose state changed) at each
        change, until it has ended. NotFound for another tenant's tournament."""
        row = self.get_row(tenant, tournament_id)
        sent = {m.match_index: m.SerializeToString() for m in self.records.matches(tournament_id)}
        yield row, self.records.matches(tournament_id)
        while row.state not in ENDED:
            event = self._changed.setdefault(tournament_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=1.0)
            row = self.get_row(tenant, tournament_id)
            changed = []
            for match in self.records.matches(tournament_id):
                data = match.SerializeToString()
                if sent.get(match.match_index) != data:
                    sent[match.match_index] = data
                    changed.append(match)
            if changed or row.state in ENDED:
                yield row, changed
