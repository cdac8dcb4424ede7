"""The per-debate event log and its live subscribers.

Design for many debates and many watchers on one event loop:

- An event is serialised once, when appended, and kept length-prefixed (its "body", in the
  debate's `DebateLog`, debate_log.py). A `Framing`, given by the transport
  (orchestrator/transport.py), turns one body or several into the bytes of one response
  message (one event a message, or all a subscriber is behind on with `batch_events`); the
  transport sends those bytes as they are. No per-subscriber copy, no per-subscriber
  queue; the batch that every caught-up subscriber sends after a wake is framed once
  (`DebateLog.batch`).
- Batching is what lets one debate have thousands of watchers: gRPC costs tens of
  microseconds a message whatever its size, so a subscriber sends one message for all it is
  behind on rather than one per event.
- A subscriber is a cursor (the last sequence it sent) over the debate's shared log: a
  bounded in-memory tail of recent event bodies, and the store for anything older. New durable
  events wake the debate's waiting subscribers (one future each, so a leaver cancels only its own).
- Token text is coalesced per turn and turned into `TokenDelta` events at a commit, which
  writes every pending event of every debate in one transaction, commits, and only then
  advances each log's durable watermark and wakes its subscribers. Nothing is announced before
  it is stored. Commits are spaced by load, not by a fixed tick: the first thing that becomes
  pending schedules one, at the end of the event loop's current pass when the process is
  quiet (a lone debate's chunk goes out at once), and up to `coalesce_s` (e.g. 25 ms) after
  the previous commit as the process gets busy (`commit_gap`: proportional to the busy share
  of the last moments, full at `FULL_LOAD`), so that under load many chunks share a commit and
  a subscriber's message. A TokenDelta's `time` is when its first chunk arrived, so relay
  latency counts the wait for the commit. The engine
  does the same at once with `commit` where a write must be durable before an outside effect
  (or awaits `committed`, a group commit at the end of the event loop's pass).
- One debate's fault stays in that debate. The hub takes only `str` token text; text that
  cannot become an event anyway (e.g. a lone surrogate, which is not UTF-8) fails its own
  buffer (`DeltaBuffer.failed`, its text dropped and logged), so that turn fails and the
  others' text and events commit as usual. A failed store write or commit keeps every pending
  event for the next commit (written again, idempotently: none lost, none doubled, sequences
  gap-free), raises `StoreUnavailable` to a caller of `commit`, and keeps `committed`
  waiters waiting for the retry (up to `commit_retries` failed commits in a row).
- Replicas (a shared PostgreSQL store): only the replica that holds a debate's lease writes
  its events. On every other replica a subscriber reads a *follower* log, served exactly like
  an owned one: the owner's commit sends a NOTIFY naming the debates written and their last
  sequences (store_postgres.py); each replica's listener calls `notified`, and the hub reads
  the new committed events of every followed debate named, once per wake-up for all of them
  (one query, `Store.events_since`, never one per subscriber), appends them in order and wakes
  the subscribers. A follower log closes once the debate has ended and every event was read.
  Every second the hub also reads every followed debate (a lost notification is late, never
  lost). When this replica loses a debate's lease its log becomes a follower (its uncommitted
  events dropped: the store refused them) and its subscribers stream on; when it takes over a
  debate it follows, `open_log` reads what is committed up to the debate's last sequence and
  the log is owned from then on: no gap, no event twice.
- A live subscriber that falls more than `max_lag` events behind is cut off with
  `SubscriberTooSlow` (carrying its last sequence) so it resumes with after_sequence; a
  subscriber that leaves just drops its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.errors import OutOfRange, ResourceExhausted
from services.orchestrator.debate_log import DebateLog, Framing, body
from services.orchestrator.store import Store, StoreUnavailable

if TYPE_CHECKING:
    from prometheus_client import Histogram

    from services.common.metrics import LoopHistogram

log = logging.getLogger(__name__)

HEARTBEAT = object()
FOLLOW_SCAN_S = 1.0  # every followed debate is read this often, whatever the notifications said
CHECKPOINT_S = 1.0  # the store's checkpoint (SQLite's write-ahead log) runs this often, in a worker thread

# The busy share (of one core: the process's CPU, or the loop's time in commits, whichever is
# larger) from which commits are spaced the whole `coalesce_s`; below it, proportionally less.
FULL_LOAD = 0.3
# How often the busy share is sampled, in seconds.
LOAD_WINDOW_S = 0.1


class SubscriberTooSlow(ResourceExhausted):
    reason = "SUBSCRIBER_TOO_SLOW"

    def __init__(self, last_sequence: int):
        super().__init__(
            f"subscriber fell too far behind; resume with after_sequence={last_sequence}",
            metadata={"last_sequence": str(last_sequence)},
        )


class TextRejected(ValueError):
    """Token text the hub cannot turn into an event: not a `str`, or a buffer whose text could
    not become an event (`DeltaBuffer.failed`). Raised to the turn that adds it, never to
    another debate."""


class DeltaBuffer:
    """Text of one turn attempt not yet turned into a TokenDelta event. `failed` says why its
    text could not become an event (the text is then dropped and the turn must fail)."""

    __slots__ = ("attempt", "debate_id", "dirty", "failed", "first_ns", "participant", "parts", "round_number")

    def __init__(self, debate_id: str, round_number: int, participant: str, attempt: int):
        self.debate_id = debate_id
        self.round_number = round_number
        self.participant = participant
        self.attempt = attempt
        self.parts: list[str] = []
        self.dirty = False
        self.failed: str | None = None
        self.first_ns = 0  # time.time_ns() of the first text since the last TokenDelta


class EventHub:
    """Every live debate's log, the coalescing tick, and the subscribers' reads.

    `framing` turns event bodies into response messages (the transport's `FRAMING`).
    `commit_retries`: failed commits in a row after which `committed` waiters get the error
    (before that they wait for the ticker's retry).
    """

    def __init__(
        self,
        store: Store,
        *,
        framing: Framing,
        coalesce_s: float = 0.025,
        tail_events: int = 4096,
        heartbeat_s: float = 10.0,
        max_lag: int = 4096,
        max_subscribers: int = 100_000,
        commit_retries: int = 40,
        relay_seconds: LoopHistogram | Histogram | None = None,
    ):
        self.store = store
        self.framing = framing
        self.coalesce_s = coalesce_s
        self.tail_events = tail_events
        self.heartbeat_s = heartbeat_s
        self.max_lag = max_lag
        self.max_subscribers = max_subscribers
        self.commit_retries = commit_retries
        self._failed_commits = 0  # in a row
        self._logs: dict[str, DebateLog] = {}
        self._dirty_buffers: list[DeltaBuffer] = []
        self._dirty_logs: list[DebateLog] = []
        self._commit_waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._last_heartbeat_scan = time.monotonic()
        self.flushes = 0
        self._followed: dict[str, DebateLog] = {}  # follower logs: another replica writes their events
        self._to_read: set[str] = set()  # followed debates named by a notification, read at the next pass
        self._read_soon = False
        self._last_follow_scan = time.monotonic()
        # The store's checkpoint in a worker thread (its fsync never stalls the loop): the one running.
        self._checkpoint: asyncio.Future[None] | None = None
        self._last_checkpoint = time.monotonic()
        self.follower_reads = 0  # queries of followed debates' events (one per wake-up, for all of them)
        # Load-spaced commits: the scheduled one, when the last ended, the busy share measured.
        self._scheduled: asyncio.Handle | None = None
        self._last_commit = 0.0  # time.monotonic()
        self._commit_seconds = 0.0  # spent in commits since the last load sample
        self._load_sample = (time.monotonic(), time.process_time())
        self.load = 0.0
        self._committing = False  # what a commit makes pending (its token deltas) it carries
        # Counts read by the metrics (orchestrator/metrics.py) when they are scraped: plain
        # integers, so the hot path pays an addition for them. `relay_seconds` (None: metrics
        # off) is observed once per message a live subscriber sends after a wake.
        self.events_appended = 0  # committed to owned logs
        self.subscriber_count = 0  # live subscribe() generators
        self.messages_sent = 0  # responses yielded by subscribe(), heartbeats included
        self.subscribers_cut = 0  # SubscriberTooSlow
        self._observe_relay = relay_seconds.observe if relay_seconds is not None else None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._checkpoint is not None:  # before the store closes the checkpoint's connection
            with contextlib.suppress(Exception):
                await self._checkpoint
        self.commit()
        for debate_log in list(self._logs.values()):
            debate_log.closed = True
            debate_log.wake()

    async def _run(self) -> None:
        """The backstop tick: samples the load, retries a failed commit (a commit is otherwise
        scheduled by what became pending, `_pending`), and sends heartbeats."""
        while True:
            await asyncio.sleep(self.coalesce_s)
            try:
                now = time.monotonic()
                self._sample_load(now)
                if self._scheduled is None:  # else that commit comes soon; store-only writes wait for it
                    self.flush()
                if self._followed and now - self._last_follow_scan >= FOLLOW_SCAN_S:
                    self._last_follow_scan = now
                    self.notified(None)
                if now - self._last_checkpoint >= CHECKPOINT_S and self._checkpoint is None:
                    self._last_checkpoint = now
                    self._checkpoint = asyncio.get_running_loop().run_in_executor(None, self.store.checkpoint)
                    self._checkpoint.add_done_callback(self._checkpointed)
                if now - self._last_heartbeat_scan >= min(1.0, self.heartbeat_s / 2):
                    self._last_heartbeat_scan = now
                    for debate_log in self._logs.values():
                        if debate_log.has_waiters and now - debate_log.last_wake >= self.heartbeat_s:
                            debate_log.wake(HEARTBEAT)
            except Exception:  # never let the ticker die: it carries every debate's events
                if self._failed_commits <= 1 or self._failed_commits % 400 == 0:
                    log.exception("event flush failed (%d in a row); retrying", self._failed_commits)

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not done.cancelled() and done.exception() is not None:
            # The next one tries again; meanwhile a commit checkpoints past WAL_AUTOCHECKPOINT_PAGES.
            log.warning("store checkpoint failed: %s", done.exception())

    # -- when to commit ------------------------------------------------------------------------
    def commit_gap(self) -> float:
        """Seconds between the end of a commit and the next one: 0 on a quiet process, growing
        with the busy share `load` to `coalesce_s` at FULL_LOAD and above."""
        return self.coalesce_s * min(1.0, self.load / FULL_LOAD)

    def _sample_load(self, now: float) -> None:
        since, cpu = self._load_sample
        wall = now - since
        if wall >= LOAD_WINDOW_S:
            cpu_now = time.process_time()
            self.load = max(cpu_now - cpu, self._commit_seconds) / wall
            self._load_sample = (now, cpu_now)
            self._commit_seconds = 0.0

    def _pending(self) -> None:
        """Something became pending: schedule the commit that will carry it (once; none before
        `start`, where callers commit themselves)."""
        if self._scheduled is not None or self._task is None or self._committing:
            return
        loop = asyncio.get_running_loop()
        delay = self._last_commit + self.commit_gap() - time.monotonic()
        if delay <= 0:
            self._scheduled = loop.call_soon(self._scheduled_commit)
        else:
            self._scheduled = loop.call_later(delay, self._scheduled_commit)

    def _scheduled_commit(self) -> None:
        self._scheduled = None
        try:
            self.flush()
        except Exception:  # the backstop tick retries
            if self._failed_commits <= 1 or self._failed_commits % 400 == 0:
                log.exception("event commit failed (%d in a row); retrying", self._failed_commits)

    async def committed(self) -> None:
        """Returns once everything written so far is committed. A group commit: the first waiter
        schedules a flush for the end of the current pass of the event loop, so every turn that
        ends in that pass (at scale, the turns of many debates end together) shares one commit,
        and a lone turn waits for no tick."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if not self._commit_waiters:
            loop.call_soon(self._group_commit)
        self._commit_waiters.append(waiter)
        await waiter

    def _group_commit(self) -> None:
        if self._commit_waiters:  # else the ticker's flush already served them
            try:
                self.flush()
            except Exception:  # the waiters wait for the ticker's retry (or got the error)
                log.exception("group commit failed")

    # -- logs ---------------------------------------------------------------------------
    def open_log(self, debate_id: str, last_sequence: int | None = None) -> DebateLog:
        """The live log of a debate this replica writes (created from the store's last sequence
        when absent). A log it followed is caught up with the store first (the events committed
        up to `last_sequence`) and owned from then on."""
        debate_log = self._logs.get(debate_id)
        if debate_log is None:
            if last_sequence is None:
                last_sequence = self.store.last_sequence(debate_id)
            debate_log = self._logs[debate_id] = DebateLog(debate_id, last_sequence, self.framing)
        elif debate_log.following:
            if last_sequence is None:
                last_sequence = self.store.last_sequence(debate_id)
            while debate_log.durable < last_sequence:
                rows = self.store.read_events(debate_id, debate_log.durable, last_sequence, 1024)
                if not rows:
                    raise RuntimeError(f"events after {debate_log.durable} of debate {debate_id} are missing")
                self._append_committed(debate_log, rows)
            debate_log.following = False
            self._followed.pop(debate_id, None)
            debate_log.wake()
        return debate_log

    def follow(self, debate_id: str) -> None:
        """This replica no longer writes the debate's events (it queued it for the cluster, or
        lost its lease): its log, if anyone reads it, follows the store from its last committed
        event; else it is dropped. Uncommitted events are dropped (the store refuses them)."""
        debate_log = self._logs.get(debate_id)
        if debate_log is None:
            return
        debate_log.forget_pending()
        debate_log.active = False
        debate_log.closing = False
        if debate_log.subscribers == 0 or not self.store.shared:
            del self._logs[debate_id]
            debate_log.closed = True
            debate_log.wake()
            return
        self._start_following(debate_log)

    def _start_following(self, debate_log: DebateLog) -> None:
        debate_log.following = True
        self._followed[debate_log.debate_id] = debate_log
        self._to_read.add(debate_log.debate_id)  # catch up now: notifications may have gone by
        self._schedule_read()

    def notified(self, latest: dict[str, int] | None) -> None:
        """Another replica committed events: `latest` maps debates to their last sequence (None:
        any followed debate may have new events). The followed ones behind are read soon, all
        in one query (`_read_followed`), once per pass of the event loop."""
        if latest is None:
            self._to_read.update(self._followed)
        else:
            for debate_id, sequence in latest.items():
                debate_log = self._followed.get(debate_id)
                if debate_log is not None and sequence > debate_log.durable:
                    self._to_read.add(debate_id)
        if self._to_read:
            self._schedule_read()

    def _schedule_read(self) -> None:
        if not self._read_soon:
            self._read_soon = True
            asyncio.get_running_loop().call_soon(self._read_followed)

    def _read_followed(self) -> None:
        """Reads the new committed events of the followed debates named since the last read (one
        query for all), appends them to their logs in order and wakes their subscribers; a
        debate that has ended closes its log once every event is read."""
        self._read_soon = False
        wanted, self._to_read = self._to_read, set()
        after = {d: self._followed[d].durable for d in wanted if d in self._followed}
        if not after:
            return
        try:
            rows, ended = self.store.events_since(after)
        except Exception:  # the next notification, or the scan a second later, reads them
            log.exception("could not read followed debates' events")
            return
        self.follower_reads += 1
        by_debate: dict[str, list[tuple[int, bytes]]] = {}
        for debate_id, sequence, data in rows:
            by_debate.setdefault(debate_id, []).append((sequence, data))
        for debate_id in after:
            debate_log = self._followed.get(debate_id)
            if debate_log is None:
                continue
            complete = self._append_committed(debate_log, by_debate.get(debate_id, []))
            if debate_id in ended and complete:
                debate_log.closed = True
                debate_log.following = False
                del self._followed[debate_id]
                if self._logs.get(debate_id) is debate_log:
                    del self._logs[debate_id]
            debate_log.wake()

    def _append_committed(self, debate_log: DebateLog, rows: list[tuple[int, bytes]]) -> bool:
        """Appends committed events read from the store, in order from durable + 1; whether
        they were gap-free (a gap stops the append: the rest is read again later)."""
        for sequence, data in rows:
            if sequence <= debate_log.durable:
                continue
            if sequence != debate_log.durable + 1:
                return False
            debate_log.append(sequence, data, self.tail_events)
            debate_log.durable = sequence
        return True

    def get(self, debate_id: str) -> DebateLog | None:
        return self._logs.get(debate_id)

    def emit(self, debate_id: str, *, time_ns: int = 0, **payload: Any) -> int:
        """Appends one event (e.g. `round_started=RoundStarted(...)`), stamped `time_ns` (default:
        now); durable and visible at the next commit (scheduled, or one the engine asks for)."""
        debate_log = self._logs.get(debate_id) or self.open_log(debate_id)
        if debate_log.following:  # another replica writes this debate's events: never here
            log.debug("debate %s: an event of a debate this replica does not own was dropped", debate_id)
            return debate_log.head
        seq = debate_log.head + 1
        event = pb.DebateEvent(sequence=seq, debate_id=debate_id, **payload)
        stamp = time_ns or time.time_ns()
        event.time.FromNanoseconds(stamp)
        data = event.SerializeToString()
        if not debate_log.pending:
            debate_log.pending_since = stamp
            self._dirty_logs.append(debate_log)
            self._pending()
        elif stamp < debate_log.pending_since:
            debate_log.pending_since = stamp
        debate_log.pending.append((seq, data))
        debate_log.append(seq, data, self.tail_events)
        return seq

    def close(self, debate_id: str) -> None:
        """No more events for this debate: subscribers end once they have read everything."""
        debate_log = self._logs.get(debate_id)
        if debate_log is not None:
            debate_log.closing = True
            debate_log.active = False
            if not debate_log.pending:
                self._dirty_logs.append(debate_log)
                self._pending()

    def drop(self, debate_id: str) -> None:
        """A debate whose lease this replica lost: its pending events are never announced (the
        store refused them), and its subscribers here follow the new owner's (`follow`)."""
        self.follow(debate_id)

    # -- token deltas -------------------------------------------------------------------
    def add_text(self, buffer: DeltaBuffer, text: str) -> None:
        """Adds a turn's text, made a TokenDelta at the next tick. Raises TextRejected for text
        that is not a `str` and for a buffer that failed (the buffer is left as it was)."""
        if type(text) is not str:
            raise TextRejected(f"token text must be a str, not {type(text).__name__}")
        if buffer.failed is not None:
            raise TextRejected(buffer.failed)
        buffer.parts.append(text)
        if not buffer.dirty:
            buffer.dirty = True
            buffer.first_ns = time.time_ns()
            self._dirty_buffers.append(buffer)
            self._pending()

    def flush_text(self, buffer: DeltaBuffer) -> None:
        """Turns the buffer's text into a TokenDelta event now (before the turn's next event).
        Never raises: text that cannot become an event fails this buffer alone (`failed`,
        its text dropped) and is logged for operators; the turn reads `failed`."""
        if buffer.parts:
            try:
                self.emit(
                    buffer.debate_id,
                    time_ns=buffer.first_ns,
                    token_delta=pb.TokenDelta(
                        round_number=buffer.round_number,
                        participant=buffer.participant,
                        text="".join(buffer.parts),
                        attempt=buffer.attempt,
                    ),
                )
            except Exception as error:  # this turn's text only: other debates' events go on
                buffer.failed = f"its text could not become an event: {type(error).__name__}: {error}"[:500]
                log.error(
                    "token text of debate %s round %d %s attempt %d dropped",
                    buffer.debate_id,
                    buffer.round_number,
                    buffer.participant,
                    buffer.attempt,
                    exc_info=error,
                )
            buffer.parts.clear()
        buffer.dirty = False

    # -- commits ----------------------------------------------------------------------------
    def flush(self) -> None:
        """A scheduled commit (`commit`), its time counted in the load and its end remembered
        for the spacing of the next."""
        started = time.monotonic()
        try:
            self.commit()
        finally:
            self._last_commit = time.monotonic()
            self._commit_seconds += self._last_commit - started

    def commit(self) -> None:
        """Commits now: coalesced text becomes TokenDelta events, every pending event and every
        store write made so far is committed in one transaction, then each log's durable
        watermark advances and its subscribers wake.

        Raises StoreUnavailable when the store fails; every pending event stays pending (and
        the store's transaction open) for the next commit. The `committed` waiters it serves
        then wait for that retry, or get the error after `commit_retries` failures in a row."""
        waiters, self._commit_waiters = self._commit_waiters, []
        self._committing = True
        try:
            self._flush()
        except BaseException as error:
            self._failed_commits += 1
            failure = StoreUnavailable(f"the event store cannot commit: {type(error).__name__}: {error}")
            if self._failed_commits < self.commit_retries or not isinstance(error, Exception):
                self._commit_waiters[:0] = waiters  # served by the next commit
            else:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(failure)
            if not isinstance(error, Exception):
                raise
            raise failure from error
        finally:
            self._committing = False
        self._failed_commits = 0
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _flush(self) -> None:
        if self._dirty_buffers:
            buffers, self._dirty_buffers = self._dirty_buffers, []
            for buffer in buffers:
                if buffer.dirty:
                    self.flush_text(buffer)  # never raises: a bad buffer fails its own turn only
        # The logs stay dirty until the commit succeeds: a failed write or commit leaves their
        # pending events for the next one (add_events rewrites a row already written).
        logs = list(dict.fromkeys(self._dirty_logs))  # a log closed then written is listed twice
        rows = [(debate_log.debate_id, seq, data) for debate_log in logs for seq, data in debate_log.pending]
        if rows:
            self.store.add_events(rows)
        self.store.commit()
        self._dirty_logs = []
        self.flushes += 1
        lost = self.store.lost  # refused by the store: another replica owns them now
        for debate_log in logs:
            if debate_log.debate_id in lost:
                if self._logs.get(debate_log.debate_id) is debate_log:
                    self.follow(debate_log.debate_id)
                continue
            if debate_log.pending:
                self.events_appended += len(debate_log.pending)
                debate_log.relay_from = debate_log.pending_since
            debate_log.pending = []
            debate_log.durable = debate_log.head
            if debate_log.closing:
                debate_log.closed = True
                if self._logs.get(debate_log.debate_id) is debate_log:
                    del self._logs[debate_log.debate_id]
            debate_log.wake()

    # -- subscribers ------------------------------------------------------------------------
    async def subscribe(
        self, debate_id: str, after_sequence: int, *, terminal: bool, last_sequence: int, batch: bool = False
    ) -> AsyncIterator[bytes]:
        """Responses carrying every event after `after_sequence`, in order, once; then live ones
        until the debate ends. One event a response, or with `batch` all that are ready.

        `terminal` and `last_sequence` are the debate's stored state when the call arrived.
        Raises OutOfRange past the last event, ResourceExhausted (TOO_MANY_SUBSCRIBERS) beyond
        `max_subscribers`, and SubscriberTooSlow when a live subscriber lags over `max_lag`.
        """
        debate_log = self._join(debate_id, after_sequence, terminal, last_sequence)
        one = self.framing.one
        cursor = after_sequence
        live = False
        woken = False  # the next message is the first after a wake: its relay latency is observed
        observe_relay = self._observe_relay
        max_lag = self.max_lag
        debate_log.subscribers += 1
        self.subscriber_count += 1
        try:
            while True:
                if cursor < debate_log.durable:
                    if cursor + 1 < debate_log.base:  # older than the memory tail
                        for response, last in self._stored(debate_log, cursor, batch):
                            yield response
                            self.messages_sent += 1
                            cursor = last
                    elif batch:
                        response, cursor = debate_log.batch(cursor)
                        yield response
                        self.messages_sent += 1
                    else:
                        yield one(debate_log.bodies[cursor + 1 - debate_log.base])
                        self.messages_sent += 1
                        cursor += 1
                    if woken:
                        woken = False
                        if observe_relay is not None and debate_log.relay_from:
                            observe_relay((time.time_ns() - debate_log.relay_from) * 1e-9)
                    if live and debate_log.durable - cursor > max_lag:
                        self.subscribers_cut += 1
                        raise SubscriberTooSlow(cursor)
                    continue
                live = True
                if debate_log.closed:
                    return
                woke = await debate_log.wait()
                if woke is HEARTBEAT and debate_log.durable == cursor:
                    yield self._heartbeat(debate_id, cursor, batch)
                    self.messages_sent += 1
                else:
                    woken = True
        finally:
            self.subscriber_count -= 1
            self._leave(debate_log)

    def _join(self, debate_id: str, after_sequence: int, terminal: bool, last_sequence: int) -> DebateLog:
        """The log a new subscriber reads, once it is allowed to."""
        debate_log = self._logs.get(debate_id)
        if debate_log is None:
            if terminal:
                debate_log = DebateLog(debate_id, last_sequence, self.framing, closed=True)
            elif self.store.holds(debate_id):
                debate_log = self.open_log(debate_id, last_sequence)
            else:  # another replica writes its events (or will): followed from the store
                debate_log = self._logs[debate_id] = DebateLog(debate_id, last_sequence, self.framing)
                self._start_following(debate_log)
        if after_sequence > debate_log.durable:
            raise OutOfRange(
                f"after_sequence {after_sequence} is past the last event {debate_log.durable}",
                reason="SEQUENCE_OUT_OF_RANGE",
                metadata={"last_sequence": str(debate_log.durable)},
            )
        if debate_log.subscribers >= self.max_subscribers:
            raise ResourceExhausted(
                f"this debate already has {debate_log.subscribers} subscribers", reason="TOO_MANY_SUBSCRIBERS"
            )
        return debate_log

    def _stored(self, debate_log: DebateLog, cursor: int, batch: bool) -> list[tuple[bytes, int]]:
        """Responses of the next page (up to 256) of events after `cursor` that are older than
        the memory tail, read from the store, each with the last sequence it carries."""
        up_to = min(debate_log.durable, debate_log.base - 1)
        rows = self.store.read_events(debate_log.debate_id, cursor, up_to, 256)
        if not rows:
            raise RuntimeError(f"events after {cursor} of debate {debate_log.debate_id} are missing from the store")
        if batch:
            return [(self.framing.many([body(data) for _, data in rows]), rows[-1][0])]
        one = self.framing.one
        return [(one(body(data)), seq) for seq, data in rows]

    def _leave(self, debate_log: DebateLog) -> None:
        """A subscriber left: an idle, inactive log with no subscriber left is dropped."""
        debate_log.subscribers -= 1
        if (
            debate_log.subscribers == 0
            and not debate_log.active
            and not debate_log.pending
            and self._logs.get(debate_log.debate_id) is debate_log
        ):
            del self._logs[debate_log.debate_id]
            if self._followed.get(debate_log.debate_id) is debate_log:
                del self._followed[debate_log.debate_id]

    def _heartbeat(self, debate_id: str, last_sequence: int, batch: bool) -> bytes:
        """Heartbeats are not logged: they repeat the last sequence the subscriber has seen."""
        event = pb.DebateEvent(sequence=last_sequence, debate_id=debate_id, heartbeat=pb.Heartbeat())
        event.time.FromNanoseconds(time.time_ns())
        data = body(event.SerializeToString())
        return self.framing.many([data]) if batch else self.framing.one(data)
