"""One debate's log as its subscribers read it (`DebateLog`), and the form events are kept in.

An event is serialised once, when appended, and kept as its "body": the serialised event
behind its length prefix, ready to go behind a field tag. The log keeps a bounded tail of
recent bodies in memory (sequences `base` .. `head`), of which subscribers may read up to
`durable`, the last committed; older events are read from the store. A `Framing`, given by
the transport (orchestrator/transport.py), turns bodies into the bytes of one response; the
batch that every caught-up subscriber sends after a wake is framed once and shared.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


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


MAX_BATCH_BYTES = 256 * 1024  # a batch stops growing past this (far below any receive limit)


def body(event_bytes: bytes) -> bytes:
    """A serialised event with its length prefix (a protobuf varint): a length-delimited
    field's value, ready to go behind a field tag."""
    return _varint(len(event_bytes)) + event_bytes


class Framing(Protocol):
    """How event bodies become the bytes of one response message; the transport provides it
    (orchestrator/transport.py). Both are called once per response, never per subscriber
    for a shared batch."""

    def one(self, body: bytes) -> bytes:
        """The response carrying one event body."""
        ...

    def many(self, bodies: list[bytes]) -> bytes:
        """The response carrying several event bodies (at least one), in order."""
        ...


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
        "following",
        "framing",
        "head",
        "last_wake",
        "pending",
        "pending_since",
        "relay_from",
        "subscribers",
    )

    def __init__(self, debate_id: str, last_sequence: int, framing: Framing, *, closed: bool = False):
        self.debate_id = debate_id
        self.framing = framing
        self.bodies: list[bytes] = []
        self.base = last_sequence + 1  # sequence of bodies[0]
        self.head = last_sequence  # last appended
        self.durable = last_sequence  # last committed: what subscribers may see
        self.pending: list[tuple[int, bytes]] = []
        # time.time_ns() of the oldest pending event (its `time`), and of the oldest event of the
        # last commit that woke the subscribers (0: unknown, e.g. read from another replica's).
        self.pending_since = 0
        self.relay_from = 0
        self.closing = False
        self.closed = closed
        self.following = False  # another replica writes its events: read from the database (EventHub.follow)
        self._waiters: list[asyncio.Future[object]] = []
        self._batches: dict[int, tuple[bytes, int]] = {}  # after sequence -> (batch response, its last sequence)
        self.subscribers = 0
        self.active = False
        self.last_wake = time.monotonic()

    def wait(self) -> asyncio.Future[object]:
        """A future resolved at the next wake. One per waiting subscriber (not one shared future:
        a subscriber that leaves cancels its own future only)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def wake(self, value: object = None) -> None:
        """Resolves every waiting subscriber's future with `value` (the hub's HEARTBEAT, or None)."""
        self.last_wake = time.monotonic()
        self._batches.clear()  # built for the old durable watermark
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(value)

    def append(self, sequence: int, data: bytes, tail_events: int) -> None:
        """Appends an event (its serialised bytes) at `sequence` (head + 1), keeping at most
        about 2 * `tail_events` bodies in memory."""
        self.head = sequence
        self.bodies.append(body(data))
        if len(self.bodies) > 2 * tail_events:
            drop = len(self.bodies) - tail_events
            del self.bodies[:drop]
            self.base += drop

    def forget_pending(self) -> None:
        """Drops what was appended and not committed (head back to durable)."""
        self.pending = []
        del self.bodies[max(0, self.durable + 1 - self.base) :]
        self.head = self.durable

    @property
    def has_waiters(self) -> bool:
        return bool(self._waiters)

    def batch(self, after: int) -> tuple[bytes, int]:
        """The batch response of the durable events after `after` (all in the memory tail), up
        to MAX_BATCH_BYTES, and its last sequence. Subscribers woken together ask for the same
        batch: it is framed once per wake."""
        cached = self._batches.get(after)
        if cached is not None:
            return cached
        bodies = self.bodies
        start, stop = after + 1 - self.base, self.durable + 1 - self.base
        size, end = 0, start
        while end < stop and (end == start or size < MAX_BATCH_BYTES):
            size += len(bodies[end]) + 1  # a byte of framing for each body
            end += 1
        built = self._batches[after] = (self.framing.many(bodies[start:end]), self.base + end - 1)
        return built
