"""Admission of debates: at most `running_limit` run at once, the rest wait in a bounded FIFO queue."""

from __future__ import annotations

from collections import OrderedDict

from services.common.errors import ResourceExhausted

RUNNING = "RUNNING"
QUEUED = "QUEUED"


class QueueFull(ResourceExhausted):
    reason = "QUEUE_FULL"


def queue_full(queue_limit: int) -> QueueFull:
    """The error of a start that finds the queue (this process's, or the cluster's) full."""
    return QueueFull(
        f"the queue is full ({queue_limit} debates waiting); try again later",
        metadata={"queue_limit": str(queue_limit)},
    )


class Scheduler:
    def __init__(self, running_limit: int, queue_limit: int):
        self.running_limit = running_limit
        self.queue_limit = queue_limit
        self.running: set[str] = set()
        self.queue: OrderedDict[str, None] = OrderedDict()

    def admit(self, debate_id: str, *, force: bool = False) -> str:
        """RUNNING when a slot is free, else QUEUED; raises QueueFull when the queue is full.

        `force` admits past the limits (debates that were already admitted before a restart).
        """
        if debate_id in self.running:
            return RUNNING
        if debate_id in self.queue:
            return QUEUED
        if len(self.running) < self.running_limit and not self.queue:
            self.running.add(debate_id)
            return RUNNING
        if len(self.queue) >= self.queue_limit and not force:
            raise queue_full(self.queue_limit)
        self.queue[debate_id] = None
        return QUEUED

    def run_now(self, debate_id: str) -> None:
        """Marks a debate running regardless of the limit (resumed after a restart)."""
        self.queue.pop(debate_id, None)
        self.running.add(debate_id)

    def finish(self, debate_id: str) -> list[str]:
        """Frees the debate's slot or queue place; returns the queued debates that may start now."""
        self.running.discard(debate_id)
        self.queue.pop(debate_id, None)
        return self.fill()

    def fill(self) -> list[str]:
        """Moves queued debates into free running slots, oldest first; returns them."""
        started = []
        while self.queue and len(self.running) < self.running_limit:
            next_id, _ = self.queue.popitem(last=False)
            self.running.add(next_id)
            started.append(next_id)
        return started

    def position(self, debate_id: str) -> int:
        """1-based place in the queue, 0 when not queued."""
        if debate_id not in self.queue:
            return 0
        for i, queued in enumerate(self.queue, 1):
            if queued == debate_id:
                return i
        return 0
