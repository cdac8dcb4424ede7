"""Following a debate's event stream to its end, resuming with after_sequence when it drops.

The stream drops when the orchestrator restarts (UNAVAILABLE), when the replica it ran on dies
behind Envoy (Envoy resets the stream: INTERNAL, "RST_STREAM"), or cuts off a subscriber that
fell behind (a status that asks it to resume). Either way the follower asks again from the
last sequence the view has applied; the view ignores anything at or below it, so nothing is
printed twice even if a server replays more than asked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.client.view import TERMINAL_STATES, DebateView
from services.common.grpc_errors import error_details

RESUME_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
# A proxy (Envoy) whose upstream replica died after the stream began can only reset the stream;
# gRPC reports that as INTERNAL with this in its details. Any other INTERNAL is the server's own.
STREAM_RESET = "rst_stream"
# Codes that mean "resume" only when the status says the subscriber was too slow.
SLOW_CODES = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}


def events_of(response: pb.StreamDebateEventsResponse) -> Sequence[pb.DebateEvent]:
    """The events a StreamDebateEvents response carries: `event` alone, or a batch in `events`."""
    return (response.event,) if response.HasField("event") else response.events


class StreamLost(RuntimeError):
    """The stream stayed down longer than the follower waits."""


def should_resume(error: grpc.RpcError) -> bool:
    code = error.code()
    if code in RESUME_CODES:
        return True
    if code == grpc.StatusCode.INTERNAL:
        return STREAM_RESET in (error.details() or "").lower()
    if code in SLOW_CODES:
        info, _ = error_details(error)
        said = f"{info.reason if info else ''} {error.details() or ''}".lower()
        return any(word in said for word in ("slow", "resume", "behind", "lag"))
    return False


async def follow(
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub,
    debate_id: str,
    view: DebateView,
    *,
    after: int = 0,
    give_up_after: float = 60.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Feeds the debate's events to `view` until the debate ends.

    Raises StreamLost when no event arrived for `give_up_after` seconds of failed attempts,
    and the AioRpcError of any failure that resuming cannot fix (NOT_FOUND, say).
    """
    view.last_sequence = max(view.last_sequence, after)
    delay = 0.2
    failing_since: float | None = None
    while not view.finished:
        reason, received = await _subscribe(stub, debate_id, view)
        if reason is None:
            return
        if received:
            failing_since, delay = None, 0.2
        now = time.monotonic()
        if failing_since is None:
            failing_since = now
            view.notice(f"{reason}; resuming after event {view.last_sequence}")
        elif now - failing_since > give_up_after:
            raise StreamLost(f"{reason}; no events for {give_up_after:.0f}s, giving up")
        await sleep(delay)
        delay = min(delay * 2, 2.0)


async def _subscribe(
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub, debate_id: str, view: DebateView
) -> tuple[str | None, bool]:
    """One subscription, from the view's last sequence: (None, _) when the debate ended, else
    (why the stream stopped, whether any response arrived before it did)."""
    received = False
    call = stub.StreamDebateEvents(
        pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=view.last_sequence, batch_events=True)
    )
    try:
        async for response in call:
            for event in events_of(response):
                view.handle(event)
            received = True
            if view.finished:
                break
    except grpc.RpcError as error:
        if not should_resume(error):
            raise
        return f"stream interrupted ({error.code().name})", received
    if view.finished:
        call.cancel()
        return None, received
    # Ended cleanly without an end event: the debate may have ended before we joined (or the
    # server is shutting down): ask.
    if await _ended_already(stub, debate_id, view):
        return None, received
    return "stream ended early", received


async def _ended_already(
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub, debate_id: str, view: DebateView
) -> bool:
    """Whether the debate is over with no event after the view's last (then the view is ended)."""
    try:
        status = await stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=10)
    except grpc.RpcError as error:
        if not should_resume(error):
            raise
        return False
    if status.debate.state in TERMINAL_STATES and status.debate.last_sequence <= view.last_sequence:
        view.end_from_summary(status.debate)
        return True
    return False
