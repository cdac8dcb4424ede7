"""The client's stream follower: resuming with after_sequence, printing nothing twice."""

from __future__ import annotations

import io

import grpc
import pytest
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from services.client.follow import StreamLost, follow, should_resume
from services.client.view import DebateView
from services.common.grpc_errors import STATUS_DETAILS_KEY
from tests.unit.test_client_view import PARTICIPANTS, PLAIN, render, simultaneous_debate


def rpc_error(code: grpc.StatusCode, details: str = "", reason: str = "") -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if reason:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="debate-engine"))
        trailing.add(
            STATUS_DETAILS_KEY,
            status_pb2.Status(code=code.value[0], message=details, details=[packed]).SerializeToString(),
        )
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


class Call:
    """A fake server-streaming call: yields responses, then optionally raises."""

    def __init__(self, events, error=None, batch: int = 0):
        self.events, self.error, self.cancelled, self.batch = events, error, False, batch

    def __aiter__(self):
        return self._run()

    async def _run(self):
        if self.batch:  # as a batch_events subscription: several events a response
            for i in range(0, len(self.events), self.batch):
                yield pb.StreamDebateEventsResponse(events=self.events[i : i + self.batch])
        else:
            for event in self.events:
                yield pb.StreamDebateEventsResponse(event=event)
        if self.error is not None:
            raise self.error

    def cancel(self):
        self.cancelled = True


class FlakyStub:
    """Serves a fixed log; each planned (count, error) cuts a stream after `count` events.

    `overlap` replays that many already-sent events on each resume, as a sloppy server might.
    """

    def __init__(self, log, cuts, overlap: int = 0, status_state=pb.DEBATE_STATE_RUNNING, batch: int = 0):
        self.log, self.cuts, self.overlap, self.batch = log, list(cuts), overlap, batch
        self.requests: list[int] = []
        self.status_state = status_state

    def StreamDebateEvents(self, request):
        self.requests.append(request.after_sequence)
        start = max(0, request.after_sequence - self.overlap)
        remaining = [e for e in self.log if e.sequence > start]
        if self.cuts:
            n, error = self.cuts.pop(0)
            return Call(remaining[:n], error, self.batch if request.batch_events else 0)
        return Call(remaining, batch=self.batch if request.batch_events else 0)

    async def GetDebateStatus(self, request, timeout=None):
        return pb.GetDebateStatusResponse(
            debate=pb.DebateSummary(debate_id=request.debate_id, state=self.status_state, last_sequence=len(self.log))
        )


async def no_sleep(_: float) -> None:
    pass


async def follow_all(stub, after: int = 0) -> tuple[str, DebateView]:
    out = io.StringIO()
    view = DebateView(out, PLAIN, participants=PARTICIPANTS, round_limit=3)
    await follow(stub, "d1", view, after=after, sleep=no_sleep)
    view.close()
    return out.getvalue(), view


@pytest.mark.parametrize("batch", [0, 7], ids=["one-event-a-response", "batches-of-7"])
async def test_drops_resume_after_the_last_event_and_print_nothing_twice(batch):
    log = simultaneous_debate().log
    expected, _ = render(log)
    too_slow = rpc_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "subscriber too slow; resume with after_sequence",
        reason="SUBSCRIBER_TOO_SLOW",
    )
    stub = FlakyStub(
        log,
        [(25, rpc_error(grpc.StatusCode.UNAVAILABLE)), (0, rpc_error(grpc.StatusCode.UNAVAILABLE)), (40, too_slow)],
        overlap=5,
        batch=batch,
    )
    output, view = await follow_all(stub)
    assert view.succeeded
    assert stub.requests == [0, 25, 25, 60]  # the third stream replayed 21-25 itself
    # the same text as one unbroken stream, apart from the reconnect notices
    notices = [line for line in output.splitlines() if "resuming after event" in line]
    assert len(notices) == 2  # one per outage, not per attempt
    assert "\n".join(line for line in output.splitlines() if line not in notices) == expected.rstrip("\n")


async def test_an_error_that_resuming_cannot_fix_is_raised():
    stub = FlakyStub(simultaneous_debate(1).log, [(3, rpc_error(grpc.StatusCode.NOT_FOUND, "no such debate"))])
    with pytest.raises(grpc.aio.AioRpcError):
        await follow_all(stub)


async def test_gives_up_when_the_stream_stays_down(monkeypatch):
    down = rpc_error(grpc.StatusCode.UNAVAILABLE)
    stub = FlakyStub(simultaneous_debate(1).log, [(2, down)] + [(0, down)] * 1000)
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr("services.client.follow.time.monotonic", lambda: next(clock))
    with pytest.raises(StreamLost):
        await follow_all(stub)


async def test_a_debate_that_ended_before_its_end_event_was_seen_is_reported_as_ended():
    log = simultaneous_debate(1).log[:-2]  # a server that closes without the final events
    stub = FlakyStub(log, [], status_state=pb.DEBATE_STATE_CANCELLED)
    output, view = await follow_all(stub)
    assert view.finished and not view.succeeded
    assert "debate cancelled" in output


async def test_attach_after_n_shows_only_later_events():
    log = simultaneous_debate(1).log
    stub = FlakyStub(log, [])
    output, view = await follow_all(stub, after=len(log) - 3)
    assert stub.requests == [len(log) - 3]
    assert "Round 1 of 3" not in output and "Winner: Ada" in output and view.succeeded


def test_which_statuses_mean_resume():
    assert should_resume(rpc_error(grpc.StatusCode.UNAVAILABLE))
    assert should_resume(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "too slow", reason="SUBSCRIBER_TOO_SLOW"))
    assert not should_resume(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", reason="QUEUE_FULL"))
    assert not should_resume(rpc_error(grpc.StatusCode.NOT_FOUND))
    # Envoy resets a stream whose replica died; gRPC says INTERNAL with the reset in its details.
    reset = "Stream removed (RST_STREAM (Received RST_STREAM with error code 2))"
    assert should_resume(rpc_error(grpc.StatusCode.INTERNAL, reset))
    assert not should_resume(rpc_error(grpc.StatusCode.INTERNAL, "the server failed"))
