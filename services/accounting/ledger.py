"""The accounting domain: validated token counts, prices, the ledger and budgets.

`Accounting` is what the servicer calls. It validates every input first (one field
violation per problem, nothing written on bad input), prices with the `PriceBook`, and runs
the store on one dedicated thread: SQLite calls are short, but a commit with
synchronous=FULL waits for an fsync (and a PostgreSQL call waits for the server), which must not
stall the event loop. One thread also serialises the writers of this process, so concurrent
identical requests simply queue up behind each other. Other processes and replicas are kept
honest by the store: BEGIN IMMEDIATE and the request_id primary key in SQLite; ON CONFLICT on
the request_id and each debate's budget row lock in PostgreSQL (services.accounting.store_postgres).

Usage rows are group-committed. A row that arrives while the ledger thread is idle is written at
once, in a transaction of its own; the rows that arrive while a commit is under way wait for it,
then go together in the next transaction (`LedgerStore.record_many`: one commit, one fsync, a
savepoint per row). Each caller is answered only once its row's transaction has committed, so a
usage record is on disk before it is announced, as with one transaction per row. A row the store
refuses (an unknown reservation, say) fails alone; if the batch's transaction itself fails, its
rows are written again one by one, each in its own transaction, and each caller gets its own
row's outcome. A lone call waits for nothing: batching only happens under concurrency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar, cast

from services.accounting.breakdown import GroupedTally, Line, Tally
from services.accounting.estimate import DebatePlan, Estimate, estimate_debate
from services.accounting.metrics import AccountingMetrics
from services.accounting.store import (
    Budget,
    LedgerStore,
    Reservation,
    ReserveResult,
    Role,
    UsageRow,
)
from services.common import tokens
from services.common.errors import DomainError, Unavailable, Violations
from services.common.money import amount_problem
from services.common.pricing import Cost, PriceBook, cost_of
from services.common.usage import Usage

MAX_TEXT_BYTES = 1 << 20  # a CountTokens text or the whole of its messages
MAX_MESSAGES = 10_000
MAX_ID_LENGTH = 512
MESSAGE_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
# Texts longer than this, and a model's first count (which loads its tokenizer file), are
# counted on a worker thread so the event loop keeps serving (tiktoken releases the GIL).
INLINE_COUNT_CHARS = 32 * 1024
# The most usage rows one group commit writes (the rest wait for the next).
MAX_BATCH_ROWS = 256
# The most requests one `record_usages` or `reserve_many` call (one BatchRecordUsage or
# BatchReserveBudget RPC) takes.
MAX_BATCH_REQUESTS = 1000

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """What a caller asks to hold (ReserveBudgetRequest's fields): the worst case of a call of
    `model` with `prompt_tokens` in and up to `max_completion_tokens` out."""

    reservation_id: str
    debate_id: str
    model: str
    prompt_tokens: int
    max_completion_tokens: int


@dataclass(frozen=True, slots=True)
class UsageRequest:
    """What a caller asks to record (RecordUsageRequest's fields): `role` None when unset;
    `total_tokens` 0 or prompt + completion."""

    request_id: str
    debate_id: str
    participant: str
    role: Role | None
    round_number: int
    model: str
    attempt: int
    usage: Usage
    total_tokens: int = 0
    estimated: bool = False
    reservation_id: str = ""


@dataclass(frozen=True, slots=True)
class DebateCostReport:
    debate_id: str
    total: Line
    by_participant: list[Line]
    by_role: list[Line]
    by_round: list[Line]
    by_model: list[Line]
    budget: Budget


def _check_id(v: Violations, field: str, value: str, *, required: bool = True) -> None:
    if required and not value:
        v.add(field, "must not be empty")
    elif len(value) > MAX_ID_LENGTH:
        v.add(field, f"must be at most {MAX_ID_LENGTH} characters")


def check_usage(v: Violations, usage: Usage, field: str = "usage", total_tokens: int = 0) -> None:
    """Token counts: not negative, cache reads and writes within prompt, reasoning within
    completion, and a given total equal to prompt + completion."""
    names = (
        "prompt_tokens",
        "completion_tokens",
        "cached_prompt_tokens",
        "reasoning_tokens",
        "cache_creation_prompt_tokens",
    )
    for name in names:
        if getattr(usage, name) < 0:
            v.add(f"{field}.{name}", "must not be negative")
    if usage.cached_prompt_tokens > usage.prompt_tokens >= 0:
        v.add(f"{field}.cached_prompt_tokens", "must not exceed prompt_tokens")
    elif usage.cached_prompt_tokens + usage.cache_creation_prompt_tokens > usage.prompt_tokens >= 0:
        v.add(f"{field}.cache_creation_prompt_tokens", "with cached_prompt_tokens must not exceed prompt_tokens")
    if usage.reasoning_tokens > usage.completion_tokens >= 0:
        v.add(f"{field}.reasoning_tokens", "must not exceed completion_tokens")
    if total_tokens < 0:
        v.add(f"{field}.total_tokens", "must not be negative")
    elif total_tokens and total_tokens != usage.total_tokens:
        v.add(f"{field}.total_tokens", "must be 0 or prompt_tokens + completion_tokens")


def _check_batch(requests: Sequence[object]) -> None:
    """A batch call's items: InvalidArgument (field "requests") for none or more than MAX_BATCH_REQUESTS."""
    v = Violations()
    if not requests:
        v.add("requests", "must not be empty")
    elif len(requests) > MAX_BATCH_REQUESTS:
        v.add("requests", f"at most {MAX_BATCH_REQUESTS} items")
    v.raise_if_any()


def _utf8_len_over(text: str, limit: int) -> bool:
    return len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit)


class Accounting:
    """`group_commit`: usage rows that arrive during a commit share the next one (see the module
    docstring); False writes each row in its own transaction (the benchmark's comparison)."""

    def __init__(
        self,
        prices: PriceBook,
        store: LedgerStore,
        *,
        group_commit: bool = True,
        metrics: AccountingMetrics | None = None,
    ):
        self.metrics = metrics  # None: metrics off
        self.prices = prices
        self.store = store
        self.group_commit = group_commit
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._queued: list[tuple[UsageRow, asyncio.Future[tuple[UsageRow, bool]]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.usage_commits = 0  # transactions that wrote usage rows (a fallback's count as one each)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._db(self.store.close)
        self._db_thread.shutdown(wait=True)

    # -- the group commit of usage rows

    def _queue(self, row: UsageRow) -> asyncio.Future[tuple[UsageRow, bool]]:
        """The future of the row's outcome, set once its transaction has committed; rows queued in
        the same pass of the loop share a transaction."""
        loop = asyncio.get_running_loop()
        if not self.group_commit:
            self.usage_commits += 1
            return loop.run_in_executor(self._db_thread, self.store.record, row)
        answer: asyncio.Future[tuple[UsageRow, bool]] = loop.create_future()
        self._queued.append((row, answer))
        if self._writer is None:
            self._writer = loop.create_task(self._write_queued(), name="ledger-group-commit")
        return answer

    async def _write_queued(self) -> None:
        """Writes the queued rows, a batch per transaction, until none are left; answers each
        caller after its batch's commit."""
        try:
            while self._queued:
                batch, self._queued = self._queued[:MAX_BATCH_ROWS], self._queued[MAX_BATCH_ROWS:]
                try:
                    outcomes = await self._db(self._write_batch, [row for row, _ in batch])
                except BaseException:  # cancelled (the loop is closing): answered below
                    self._queued[:0] = batch
                    raise
                for (_, answer), outcome in zip(batch, outcomes, strict=True):
                    if answer.done():  # the caller went away; its row stands
                        continue
                    if isinstance(outcome, BaseException):
                        answer.set_exception(outcome)
                    else:
                        answer.set_result(outcome)
        finally:
            self._writer = None
            for _, answer in self._queued:  # only if the loop above was interrupted
                if not answer.done():  # its row may or may not be written: a retry tells
                    answer.set_exception(Unavailable("the ledger stopped before this usage was recorded"))
            self._queued = []

    def _write_batch(self, rows: list[UsageRow]) -> list[tuple[UsageRow, bool] | BaseException]:
        """On the ledger thread: the rows in one transaction, or, when that transaction fails as a
        whole, one by one; each row's outcome (or the exception that refused it), in order."""
        if len(rows) > 1:
            self.usage_commits += 1
            try:
                return list(self.store.record_many(rows))
            except Exception:
                log.warning("a group commit of %d usage rows failed; writing them one by one", len(rows), exc_info=True)
        outcomes: list[tuple[UsageRow, bool] | BaseException] = []
        for row in rows:
            self.usage_commits += 1
            try:
                outcomes.append(self.store.record(row))
            except Exception as error:
                outcomes.append(error)
        return outcomes

    # -- tokens and prices

    async def count_tokens(
        self, model: str, text: str = "", messages: Sequence[Mapping[str, str]] = ()
    ) -> tokens.TokenCount:
        v = Violations()
        if not model:
            v.add("model", "must not be empty")
        if bool(text) == bool(messages):
            v.add("text", "exactly one of text and messages must be given")
        if text and _utf8_len_over(text, MAX_TEXT_BYTES):
            v.add("text", f"must be at most {MAX_TEXT_BYTES} bytes")
        if len(messages) > MAX_MESSAGES:
            v.add("messages", f"at most {MAX_MESSAGES} messages")
        elif messages:
            for i, message in enumerate(messages):
                if message.get("role") not in MESSAGE_ROLES:
                    v.add(f"messages[{i}].role", f"must be one of {', '.join(sorted(MESSAGE_ROLES))}")
            size = sum(len(m.get("content") or "") + len(m.get("name") or "") for m in messages)
            if size > MAX_TEXT_BYTES or _utf8_len_over(
                "".join(m.get("content") or "" for m in messages), MAX_TEXT_BYTES
            ):
                v.add("messages", f"contents must be at most {MAX_TEXT_BYTES} bytes in all")
        v.raise_if_any()
        count: Callable[[], tokens.TokenCount] = (
            (lambda: tokens.count_tokens(model, text=text))
            if text
            else (lambda: tokens.count_tokens(model, messages=messages))
        )
        chars = len(text) if text else sum(len(m.get("content") or "") for m in messages)
        if chars > INLINE_COUNT_CHARS or not tokens.tokenizer_ready(model):
            return await asyncio.to_thread(count)
        return count()

    def calculate_cost(self, model: str, usage: Usage, total_tokens: int = 0) -> Cost:
        v = Violations()
        if not model:
            v.add("model", "must not be empty")
        check_usage(v, usage, total_tokens=total_tokens)
        v.raise_if_any()
        return self.prices.cost(model, usage)

    # -- the ledger

    def usage_row(self, request: UsageRequest) -> UsageRow:
        """The priced ledger row of `request`, validated first: InvalidArgument with one field
        violation per problem (paths as in RecordUsageRequest), NotFound for a model without a price."""
        v = Violations()
        _check_id(v, "request_id", request.request_id)
        _check_id(v, "debate_id", request.debate_id)
        _check_id(v, "participant", request.participant, required=False)
        _check_id(v, "reservation_id", request.reservation_id, required=False)
        if request.role is None:
            v.add("role", "must be ROLE_DEBATER, ROLE_JUDGE or ROLE_VERDICT")
        if request.round_number < 0:
            v.add("round_number", "must not be negative")
        if request.attempt < 0:
            v.add("attempt", "must not be negative")
        if not request.model:
            v.add("model", "must not be empty")
        check_usage(v, request.usage, total_tokens=request.total_tokens)
        v.raise_if_any()
        cost = self.prices.cost(request.model, request.usage).total
        return UsageRow(
            request.request_id,
            request.debate_id,
            request.participant,
            cast(Role, request.role),  # not None: raise_if_any above
            request.round_number,
            request.model,
            request.attempt,
            request.usage,
            request.estimated,
            cost,
            reservation_id=request.reservation_id,
        )

    async def record_usage(
        self,
        *,
        request_id: str,
        debate_id: str,
        participant: str,
        role: Role | None,
        round_number: int,
        model: str,
        attempt: int,
        usage: Usage,
        total_tokens: int = 0,
        estimated: bool = False,
        reservation_id: str = "",
    ) -> tuple[UsageRow, bool]:
        """One ledger row per request_id: (the row, False) the first time, (the first row,
        True) on a repeat, which writes nothing."""
        request = UsageRequest(
            request_id,
            debate_id,
            participant,
            role,
            round_number,
            model,
            attempt,
            usage,
            total_tokens,
            estimated,
            reservation_id,
        )
        return await self.record(request)

    async def record(self, request: UsageRequest) -> tuple[UsageRow, bool]:
        """`record_usage` of a UsageRequest: (the row, duplicate) once committed."""
        outcome = await self._queue(self.usage_row(request))
        self._count(outcome)
        return outcome

    def _count(self, outcome: tuple[UsageRow, bool]) -> None:
        """A committed record in the metrics: a row written (and its cost), or a duplicate absorbed."""
        if self.metrics is None:
            return
        row, duplicate = outcome
        if duplicate:
            self.metrics.ledger_duplicates.inc()
        else:
            self.metrics.ledger_writes.inc()
            self.metrics.cost_usd.labels(row.model, row.role.value).inc(float(row.cost))

    async def record_usages(self, requests: Sequence[UsageRequest]) -> list[tuple[UsageRow, bool] | Exception]:
        """Each request recorded as `record_usage` would, with its own outcome, in order: (the row,
        duplicate) or the exception that refused it (a DomainError; anything else is a fault of
        the ledger). The valid rows are queued together, so they share a group commit; the call
        returns once every one of them is committed. InvalidArgument (field "requests") for no
        requests or more than MAX_BATCH_REQUESTS; nothing is written then."""
        _check_batch(requests)
        outcomes: list[tuple[UsageRow, bool] | Exception | None] = []
        waits: list[tuple[int, asyncio.Future[tuple[UsageRow, bool]]]] = []
        for i, request in enumerate(requests):
            try:
                row = self.usage_row(request)
            except DomainError as error:
                outcomes.append(error)
                continue
            outcomes.append(None)  # its outcome, once committed, below
            waits.append((i, self._queue(row)))
        results = await asyncio.gather(*(answer for _, answer in waits), return_exceptions=True)
        for (i, _), result in zip(waits, results, strict=True):
            if isinstance(result, Exception):
                outcomes[i] = result
            elif isinstance(result, BaseException):  # cancelled: not ours to swallow
                raise result
            else:
                outcomes[i] = result
                self._count(result)
        return [cast("tuple[UsageRow, bool] | Exception", outcome) for outcome in outcomes]

    async def record_usages_then_costs(
        self, requests: Sequence[UsageRequest], debate_ids: Sequence[str]
    ) -> tuple[list[tuple[UsageRow, bool] | Exception], list[DebateCostReport]]:
        """`record_usages(requests)`, then the cost of each of `debate_ids` as `debate_cost` reads
        it, once every recorded request is committed (a debate's last records and its final cost
        together). The ids are checked first: InvalidArgument (field "cost_debate_ids[i]", or
        "cost_debate_ids" for more than MAX_BATCH_REQUESTS), and nothing is written then."""
        v = Violations()
        if len(debate_ids) > MAX_BATCH_REQUESTS:
            v.add("cost_debate_ids", f"at most {MAX_BATCH_REQUESTS} ids")
        else:
            for i, debate_id in enumerate(debate_ids):
                _check_id(v, f"cost_debate_ids[{i}]", debate_id)
        v.raise_if_any()
        outcomes = await self.record_usages(requests)
        return outcomes, [await self.debate_cost(debate_id) for debate_id in debate_ids]

    async def debate_cost(self, debate_id: str) -> DebateCostReport:
        v = Violations()
        _check_id(v, "debate_id", debate_id)
        v.raise_if_any()
        rows, budget = await self._db(self.store.snapshot, debate_id)
        return report(debate_id, rows, budget)

    # -- budgets

    async def set_budget(self, debate_id: str, cap: Decimal | None, cap_field: str = "cap.amount") -> Budget:
        """Sets the cap (None: removes it). A cap outside the bounds of a client's amount
        (services/common/money.py: not negative, at most 1,000,000,000, 12 decimals) is refused,
        so every later sum of the debate's budget stays exact."""
        v = Violations()
        _check_id(v, "debate_id", debate_id)
        problem = None if cap is None else amount_problem(cap)
        if problem:
            v.add(cap_field, problem)
        v.raise_if_any()
        return await self._db(self.store.set_cap, debate_id, cap)

    def worst_case(self, model: str, prompt_tokens: int, max_completion_tokens: int) -> Decimal:
        """prompt_tokens at the input price plus max_completion_tokens at the output price."""
        return cost_of(self.prices.price(model), Usage(prompt_tokens, max_completion_tokens)).total

    async def reserve(
        self, reservation_id: str, debate_id: str, model: str, prompt_tokens: int, max_completion_tokens: int
    ) -> ReserveResult:
        v = Violations()
        _check_id(v, "reservation_id", reservation_id)
        _check_id(v, "debate_id", debate_id)
        if not model:
            v.add("model", "must not be empty")
        if prompt_tokens < 0:
            v.add("prompt_tokens", "must not be negative")
        if max_completion_tokens < 0:
            v.add("max_completion_tokens", "must not be negative")
        v.raise_if_any()
        amount = self.worst_case(model, prompt_tokens, max_completion_tokens)
        reservation = Reservation(reservation_id, debate_id, model, prompt_tokens, max_completion_tokens, amount)
        result = await self._db(self.store.reserve, reservation)
        if self.metrics is not None:
            outcome = "duplicate" if result.duplicate else "granted" if result.granted else "refused"
            self.metrics.reservations.labels(outcome).inc()
        return result

    async def reserve_many(self, requests: Sequence[ReserveRequest]) -> list[ReserveResult | Exception]:
        """Each request decided as `reserve` would, one at a time in the order given (each in its own
        transaction, so a cap is never passed), with its own outcome, in order: the ReserveResult
        (granted or not) or the exception that refused it (a DomainError: bad input, an unknown
        model; anything else is a fault of the ledger). InvalidArgument (field "requests") for no
        requests or more than MAX_BATCH_REQUESTS; nothing is held then."""
        _check_batch(requests)
        outcomes: list[ReserveResult | Exception] = []
        for r in requests:
            try:
                outcomes.append(
                    await self.reserve(r.reservation_id, r.debate_id, r.model, r.prompt_tokens, r.max_completion_tokens)
                )
            except Exception as error:  # noqa: BLE001 - this item's outcome; the others are decided
                outcomes.append(error)
        return outcomes

    async def release(self, reservation_id: str) -> Budget:
        v = Violations()
        _check_id(v, "reservation_id", reservation_id)
        v.raise_if_any()
        return await self._db(self.store.release, reservation_id)

    # -- estimates

    async def estimate(self, plan: DebatePlan) -> Estimate:
        """On a worker thread: it counts prompt texts, possibly with a tokenizer not loaded yet."""
        return await asyncio.to_thread(estimate_debate, plan, self.prices)


def report(debate_id: str, rows: Sequence[UsageRow], budget: Budget) -> DebateCostReport:
    """Every figure is the exact sum of the rows."""
    total = Tally()
    by_participant: GroupedTally[UsageRow] = GroupedTally(lambda r: r.participant)
    by_role: GroupedTally[UsageRow] = GroupedTally(lambda r: r.role.value, _ROLE_ORDER.__getitem__)
    by_round: GroupedTally[UsageRow] = GroupedTally(lambda r: str(r.round_number), int)
    by_model: GroupedTally[UsageRow] = GroupedTally(lambda r: r.model)
    for row in rows:
        total.add(row.usage, row.cost, row.estimated)
        for group in (by_participant, by_role, by_round, by_model):
            group.add(row, row.usage, row.cost, row.estimated)
    return DebateCostReport(
        debate_id,
        total.line("total"),
        by_participant.lines(),
        by_role.lines(),
        by_round.lines(),
        by_model.lines(),
        budget,
    )


_ROLE_ORDER = {role.value: i for i, role in enumerate(Role)}

__all__ = ["Accounting", "DebateCostReport", "ReserveRequest", "UsageRequest", "check_usage", "report"]
