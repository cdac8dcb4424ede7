"""The per-debate event log and its live subscribers.

Design for many debates and many watchers on one event loop:

- An event is serialised once, when appended, and kept length-prefixed; a response is that
  body behind the tag of `event` (one event a message) or several bodies each behind the tag
  of `events` (`batch_events`), sent through a pass-through serializer. No per-subscriber
  copy, no per-subscriber queue; the batch that every caught-up subscriber sends after a
  wake is joined once (`DebateLog.batch`).
- Batching is what lets one debate have thousands of watchers: gRPC costs tens of
  microseconds a message whatever its size, so a subscriber sends one message for all it is
  behind on rather than one per event.
- A subscriber is a cursor (the last sequence it sent) over the debate's shared log: a
  bounded in-memory tail of recent event bodies, and SQLite for anything older. New durable
  events wake the debate's waiting subscribers (one future each, so a leaver cancels only its own).
- Token text is coalesced per turn and turned into `TokenDelta` events on one process-wide
  tick (`coalesce_s`, e.g. 25 ms); the same tick writes every pending event of every debate
  in one transaction, commits, and only then advances each log's durable watermark and wakes
  its subscribers. Nothing is announced before it is stored.
- A live subscriber that falls more than `max_lag` events behind is cut off with
  `SubscriberTooSlow` (carrying its last sequence) so it resumes with after_sequence; a
  subscriber that leaves just drops its cursor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.errors import OutOfRange, ResourceExhausted
from services.orchestrator.store import Store

log = logging.getLogger(__name__)

HEARTBEAT = object()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        bits = n & 0x7F
        n >>= 7
        if n:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


EVENT_TAG = b"\x0a"  # StreamDebateEventsResponse.event: field 1, length-delimited
EVENTS_TAG = b"\x12"  # StreamDebateEventsResponse.events: field 2, length-delimited
MAX_BATCH_BYTES = 256 * 1024  # a batch stops growing past this (far below any receive limit)


def body(event_bytes: bytes) -> bytes:
    """A serialised event with its length prefix: what follows a field tag on the wire."""
    return _varint(len(event_bytes)) + event_bytes


def frame(event_bytes: bytes) -> bytes:
    """The serialised StreamDebateEventsResponse{event} around an already serialised event."""
    return EVENT_TAG + body(event_bytes)


def batch_frame(bodies: list[bytes]) -> bytes:
    """The serialised StreamDebateEventsResponse{events} of event bodies (at least one)."""
    return EVENTS_TAG + EVENTS_TAG.join(bodies)


class SubscriberTooSlow(ResourceExhausted):
    reason = "SUBSCRIBER_TOO_SLOW"

    def __init__(self, last_sequence: int):
        super().__init__(
            f"subscriber fell too far behind; resume with after_sequence={last_sequence}",
            metadata={"last_sequence": str(last_sequence)},
        )


class DeltaBuffer:
    """Text of one turn attempt not yet turned into a TokenDelta event."""

    __slots__ = ("attempt", "debate_id", "dirty", "participant", "parts", "round_number")

    def __init__(self, debate_id: str, round_number: int, participant: str, attempt: int):
        self.debate_id = debate_id
        self.round_number = round_number
        self.participant = participant
        self.attempt = attempt
        self.parts: list[str] = []
        self.dirty = False


class DebateLog:
    """One debate's log as subscribers see it: event bodies of sequences base .. head, readable up to durable."""

    __slots__ = (
        "_batches",
        "_waiters",
        "active",
        "base",
        "bodies",
        "closed",
        "closing",
        "debate_id",
        "durable",
        "head",
        "last_wake",
        "pending",
        "subscribers",
    )

    def __init__(self, debate_id: str, last_sequence: int, *, closed: bool = False):
        self.debate_id = debate_id
        self.bodies: list[bytes] = []
        self.base = last_sequence + 1  # sequence of bodies[0]
        self.head = last_sequence  # last appended
        self.durable = last_sequence  # last committed: what subscribers may see
        self.pending: list[tuple[int, bytes]] = []
        self.closing = False
        self.closed = closed
        self._waiters: list[asyncio.Future] = []
        self._batches: dict[int, tuple[bytes, int]] = {}  # after sequence -> (batch frame, its last sequence)
        self.subscribers = 0
        self.active = False
        self.last_wake = time.monotonic()

    def wait(self) -> asyncio.Future:
        """A future resolved at the next wake. One per waiting subscriber (not one shared future:
        a subscriber that leaves cancels its own future only)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def wake(self, value=None) -> None:
        self.last_wake = time.monotonic()
        self._batches.clear()  # built for the old durable watermark
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(value)

    @property
    def has_waiters(self) -> bool:
        return bool(self._waiters)

    def batch(self, after: int) -> tuple[bytes, int]:
        """The batch frame of the durable events after `after` (all in the memory tail), up to
        MAX_BATCH_BYTES, and its last sequence. Subscribers woken together ask for the same
        batch: it is joined once per wake."""
        cached = self._batches.get(after)
        if cached is not None:
            return cached
        bodies = self.bodies
        start, stop = after + 1 - self.base, self.durable + 1 - self.base
        size, end = 0, start
        while end < stop and (end == start or size < MAX_BATCH_BYTES):
            size += len(bodies[end]) + 1
            end += 1
        built = self._batches[after] = (batch_frame(bodies[start:end]), self.base + end - 1)
        return built


class EventHub:
    def __init__(
        self,
        store: Store,
        *,
        coalesce_s: float = 0.025,
        tail_events: int = 4096,
        heartbeat_s: float = 10.0,
        max_lag: int = 4096,
        max_subscribers: int = 100_000,
    ):
        self.store = store
        self.coalesce_s = coalesce_s
        self.tail_events = tail_events
        self.heartbeat_s = heartbeat_s
        self.max_lag = max_lag
        self.max_subscribers = max_subscribers
        self._logs: dict[str, DebateLog] = {}
        self._dirty_buffers: list[DeltaBuffer] = []
        self._dirty_logs: list[DebateLog] = []
        self._commit_waiters: list[asyncio.Future] = []
        self._task: asyncio.Task | None = None
        self._last_heartbeat_scan = time.monotonic()
        self.flushes = 0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.flush()
        for debate_log in list(self._logs.values()):
            debate_log.closed = True
            debate_log.wake()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.coalesce_s)
            try:
                self.flush()
                now = time.monotonic()
                if now - self._last_heartbeat_scan >= min(1.0, self.heartbeat_s / 2):
                    self._last_heartbeat_scan = now
                    for debate_log in self._logs.values():
                        if debate_log.has_waiters and now - debate_log.last_wake >= self.heartbeat_s:
                            debate_log.wake(HEARTBEAT)
            except Exception:  # never let the ticker die: it carries every debate's events
                log.exception("event flush failed")

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
            except Exception:  # the waiters got the error; the ticker retries the writes
                log.exception("group commit failed")

    # -- logs ---------------------------------------------------------------------------
    def open_log(self, debate_id: str, last_sequence: int | None = None) -> DebateLog:
        """The live log of a debate (created from the store's last sequence when absent)."""
        debate_log = self._logs.get(debate_id)
        if debate_log is None:
            if last_sequence is None:
                last_sequence = self.store.last_sequence(debate_id)
            debate_log = self._logs[debate_id] = DebateLog(debate_id, last_sequence)
        return debate_log

    def get(self, debate_id: str) -> DebateLog | None:
        return self._logs.get(debate_id)

    def emit(self, debate_id: str, **payload) -> int:
        """Appends one event (e.g. `round_started=RoundStarted(...)`); durable and visible at the next flush."""
        debate_log = self._logs.get(debate_id) or self.open_log(debate_id)
        seq = debate_log.head + 1
        event = pb.DebateEvent(sequence=seq, debate_id=debate_id, **payload)
        event.time.FromNanoseconds(time.time_ns())
        data = event.SerializeToString()
        debate_log.head = seq
        if not debate_log.pending:
            self._dirty_logs.append(debate_log)
        debate_log.pending.append((seq, data))
        debate_log.bodies.append(body(data))
        if len(debate_log.bodies) > 2 * self.tail_events:
            drop = len(debate_log.bodies) - self.tail_events
            del debate_log.bodies[:drop]
            debate_log.base += drop
        return seq

    def close(self, debate_id: str) -> None:
        """No more events for this debate: subscribers end once they have read everything."""
        debate_log = self._logs.get(debate_id)
        if debate_log is not None:
            debate_log.closing = True
            debate_log.active = False
            if not debate_log.pending:
                self._dirty_logs.append(debate_log)

    # -- token deltas -------------------------------------------------------------------
    def add_text(self, buffer: DeltaBuffer, text: str) -> None:
        buffer.parts.append(text)
        if not buffer.dirty:
            buffer.dirty = True
            self._dirty_buffers.append(buffer)

    def flush_text(self, buffer: DeltaBuffer) -> None:
        """Turns the buffer's text into a TokenDelta event now (before the turn's next event)."""
        if buffer.parts:
            text = "".join(buffer.parts)
            buffer.parts.clear()
            self.emit(
                buffer.debate_id,
                token_delta=pb.TokenDelta(
                    round_number=buffer.round_number, participant=buffer.participant, text=text, attempt=buffer.attempt
                ),
            )
        buffer.dirty = False

    # -- the tick -------------------------------------------------------------------------
    def flush(self) -> None:
        """Coalesced deltas become events; every pending write is committed; then subscribers see it."""
        waiters, self._commit_waiters = self._commit_waiters, []
        try:
            self._flush()
        except BaseException as error:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            raise
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _flush(self) -> None:
        if self._dirty_buffers:
            buffers, self._dirty_buffers = self._dirty_buffers, []
            for buffer in buffers:
                if buffer.dirty:
                    self.flush_text(buffer)
        logs, self._dirty_logs = self._dirty_logs, []
        rows = [(debate_log.debate_id, seq, data) for debate_log in logs for seq, data in debate_log.pending]
        if rows:
            self.store.add_events(rows)
        self.store.commit()
        self.flushes += 1
        for debate_log in logs:
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
        """
        debate_log = self._logs.get(debate_id)
        if debate_log is None:
            if terminal:
                debate_log = DebateLog(debate_id, last_sequence, closed=True)
            else:
                debate_log = self.open_log(debate_id, last_sequence)
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
        cursor = after_sequence
        live = False
        max_lag = self.max_lag
        store = self.store
        debate_log.subscribers += 1
        try:
            while True:
                if cursor < debate_log.durable:
                    if cursor + 1 < debate_log.base:  # older than the memory tail
                        rows = store.read_events(debate_id, cursor, min(debate_log.durable, debate_log.base - 1), 256)
                        if not rows:
                            raise RuntimeError(
                                f"events after {cursor} of debate {debate_id} are missing from the store"
                            )
                        if batch:
                            yield batch_frame([body(data) for _, data in rows])
                            cursor = rows[-1][0]
                        else:
                            for seq, data in rows:
                                yield frame(data)
                                cursor = seq
                    elif batch:
                        response, cursor = debate_log.batch(cursor)
                        yield response
                    else:
                        index = cursor + 1 - debate_log.base
                        yield EVENT_TAG + debate_log.bodies[index]
                        cursor += 1
                    if live and debate_log.durable - cursor > max_lag:
                        raise SubscriberTooSlow(cursor)
                    continue
                live = True
                if debate_log.closed:
                    return
                woke = await debate_log.wait()
                if woke is HEARTBEAT and debate_log.durable == cursor:
                    yield heartbeat_frame(debate_id, cursor, batch=batch)
        finally:
            debate_log.subscribers -= 1
            if (
                debate_log.subscribers == 0
                and not debate_log.active
                and not debate_log.pending
                and self._logs.get(debate_id) is debate_log
            ):
                del self._logs[debate_id]


def heartbeat_frame(debate_id: str, last_sequence: int, *, batch: bool = False) -> bytes:
    """Heartbeats are not logged: they repeat the last sequence the subscriber has seen."""
    event = pb.DebateEvent(sequence=last_sequence, debate_id=debate_id, heartbeat=pb.Heartbeat())
    event.time.FromNanoseconds(time.time_ns())
    data = event.SerializeToString()
    return batch_frame([body(data)]) if batch else frame(data)
