"""The load driver: ghz's run model on grpc.aio.

`concurrency` workers share one counter of requests; each takes the next request number,
waits for its slot when `rps` is set (request i starts at t0 + i/rps, ghz's constant
schedule), makes the call and records its latency, status and error. Calls go through
generic multicallables (`channel.unary_unary(path, ...)` and friends) with the request
serialised once up front (unless the data is a template) and the reflected response class's
`FromString` as the deserialiser, so the per-call cost on this side is the gRPC core's and
little else. Workers are spread over `connections` channels (see `services.loadtest.config`);
the requests come from `services.loadtest.payloads`.

Stops like ghz: after `total` calls (endReason "normal"); after `duration` (-z, total
ignored) or `max_duration` (-x) with endReason "timeout", where `duration_stop` says what
happens to calls still in flight ("close": cancelled and reported as Canceled, "wait":
awaited, "ignore": cancelled and left out); on Ctrl-C with endReason "cancel".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc

from services.loadtest.config import LoadConfig
from services.loadtest.payloads import Payloads
from services.loadtest.reflection import CallError, Method, resolve
from services.loadtest.report import CallRecorder, MessageStats, build_report

# Go's names of the status codes (google.golang.org/grpc/codes String()).
GO_CODE_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
CLOSING_ERROR = "rpc error: code = Canceled desc = grpc: the client connection is closing"


def rpc_error(error: grpc.RpcError) -> tuple[str, str]:
    """(status, error) as ghz reports them: Go's code name and status.Error()'s text."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    name = GO_CODE_NAMES.get(code, "Unknown")
    details = error.details() if hasattr(error, "details") else str(error)
    return name, f"rpc error: code = {name} desc = {details or ''}"


@dataclass
class RunState:
    next_number: int = 0
    stopping: bool = False
    record_cancelled: bool = True


class LoadRunner:
    """One load run. `prepare()` (blocking: reflection) then `await run()`."""

    def __init__(self, config: LoadConfig):
        self.config = config
        self.method: Method | None = None
        self.payloads: Payloads | None = None
        self.calls = CallRecorder(skip_first=config.skip_first)
        self.messages: MessageStats | None = None
        self.state = RunState(next_number=config.first_number)
        self.end_reason = "normal"
        self._tasks: list[asyncio.Task[None]] = []

    # --- setup -----------------------------------------------------------------------------

    def prepare(self) -> Method:
        config = self.config
        if config.concurrency < 1:
            raise CallError("concurrency (-c) must be at least 1")
        if config.connections < 1:
            raise CallError("connections must be at least 1")
        if config.duration <= 0 and config.total < 1:
            raise CallError("total (-n) must be at least 1 unless a duration (-z) is given")
        if config.duration_stop not in ("close", "wait", "ignore"):
            raise CallError("duration-stop must be close, wait or ignore")
        if config.protoset:
            self.method = resolve(None, config.call, protoset=config.protoset)
        else:
            with config.sync_channel() as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=config.dial_timeout)
                except grpc.FutureTimeoutError:
                    raise CallError(f"cannot connect to {config.target} within {config.dial_timeout:g}s") from None
                self.method = resolve(channel, config.call)
        self.payloads = Payloads(self.method, config.data)
        if self.method.server_streaming:
            self.messages = MessageStats()
        return self.method

    # --- the run -----------------------------------------------------------------------------

    def _take(self) -> int | None:
        state = self.state
        if state.stopping:
            return None
        number = state.next_number
        if self.config.duration <= 0 and number >= self.config.first_number + self.config.total:
            return None
        state.next_number = number + 1
        return number

    async def _pace(self, number: int, t0: float) -> bool:
        rps = self.config.rps
        if rps > 0:
            delay = t0 + (number - self.config.first_number) / rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        return not self.state.stopping

    def _record_cancelled(self, start: int) -> None:
        if self.state.record_cancelled:
            self.calls.add(time.perf_counter_ns() - start, time.time_ns(), "Canceled", CLOSING_ERROR)

    async def _unary_worker(self, worker_id: str, multicallable: Any, t0: float) -> None:
        timeout = self.config.timeout or None
        metadata = tuple(self.config.metadata.items()) if self.config.metadata else None
        payloads = self.payloads
        assert payloads is not None  # drive() prepared the run
        add = self.calls.add
        perf, wall = time.perf_counter_ns, time.time_ns
        while (number := self._take()) is not None:
            if not await self._pace(number, t0):
                return
            request = payloads.for_call(number, worker_id)[0]
            start = perf()
            try:
                await multicallable(request, timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                end = perf()
                status, text = rpc_error(error)
                add(end - start, wall(), status, text)
                continue
            except asyncio.CancelledError:
                self._record_cancelled(start)
                raise
            add(perf() - start, wall())

    async def _streaming_worker(self, worker_id: str, multicallable: Any, t0: float) -> None:
        timeout = self.config.timeout or None
        metadata = tuple(self.config.metadata.items()) if self.config.metadata else None
        method, payloads = self.method, self.payloads
        assert method is not None and payloads is not None  # drive() prepared the run
        perf, wall = time.perf_counter_ns, time.time_ns
        while (number := self._take()) is not None:
            if not await self._pace(number, t0):
                return
            requests = payloads.for_call(number, worker_id)
            gaps: list[int] = []
            start = perf()
            status, text = "OK", ""
            try:
                if method.client_streaming and not method.server_streaming:
                    await multicallable(iter(requests), timeout=timeout, metadata=metadata)
                else:
                    request = iter(requests) if method.client_streaming else requests[0]
                    await self._read_stream(multicallable(request, timeout=timeout, metadata=metadata), start, gaps)
            except grpc.aio.AioRpcError as error:
                status, text = rpc_error(error)
            except asyncio.CancelledError:
                if self.messages is not None and self.state.record_cancelled:
                    self.messages.add_call(gaps)
                self._record_cancelled(start)
                raise
            end = perf()
            if self.messages is not None:
                self.messages.add_call(gaps)
            self.calls.add(end - start, wall(), status, text)

    async def _read_stream(self, call: Any, start: int, gaps: list[int]) -> None:
        """Reads a server stream to its end, appending each message's gap (ns since the previous
        message, or since `start`) to `gaps`. At --stream-call-count messages or after
        --stream-call-duration it cancels the call, which then counts as OK."""
        perf = time.perf_counter_ns
        previous = start
        cap = self.config.stream_call_count
        until = start + int(self.config.stream_call_duration * 1e9) if self.config.stream_call_duration > 0 else 0
        while True:
            if until:
                left = (until - perf()) / 1e9
                if left <= 0:
                    call.cancel()
                    return
                try:
                    message = await asyncio.wait_for(call.read(), left)
                except TimeoutError:
                    call.cancel()
                    return
            else:
                message = await call.read()
            if message is grpc.aio.EOF:
                return
            now = perf()
            gaps.append(now - previous)
            previous = now
            if cap and len(gaps) >= cap:
                call.cancel()
                return

    def stop(self, reason: str = "cancel") -> None:
        """Ends the run early (Ctrl-C): in-flight calls are cancelled and reported."""
        if self.state.stopping:
            return
        self.end_reason = reason
        self.state.stopping = True
        for task in self._tasks:
            task.cancel()

    async def run(self) -> dict[str, Any]:
        """Runs the load and returns ghz's report as a dict."""
        return self.report(await self.drive())

    def report(self, total_ns: int) -> dict[str, Any]:
        assert self.payloads is not None
        return build_report(
            self.config.run_options(self.payloads.data), self.calls, total_ns, self.end_reason, self.messages
        )

    async def drive(self) -> int:
        """Makes the calls; returns the run's total time in ns (the results are in self.calls)."""
        if self.method is None:
            self.prepare()
        config, method = self.config, self.method
        assert method is not None and self.payloads is not None
        channels = await self._open_channels()
        factory, worker = self._worker_for(method)
        callables = [
            getattr(c, factory)(
                method.path, request_serializer=None, response_deserializer=method.response_class.FromString
            )
            for c in channels
        ]
        workers = config.concurrency if config.duration > 0 else min(config.concurrency, config.total)
        start_ns = time.perf_counter_ns()
        t0 = time.perf_counter()
        self._tasks = [asyncio.create_task(worker(str(i), callables[i % len(callables)], t0)) for i in range(workers)]
        limit = config.duration if config.duration > 0 else config.max_duration
        try:
            _, pending = await asyncio.wait(self._tasks, timeout=limit if limit > 0 else None)
            if pending and not self.state.stopping:
                self.end_reason = "timeout"
                self.state.stopping = True
                if config.duration_stop == "wait":
                    await asyncio.wait(pending)
                else:
                    self.state.record_cancelled = config.duration_stop == "close"
                    for task in pending:
                        task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            total_ns = time.perf_counter_ns() - start_ns
            for channel in channels:
                await channel.close()
        for task in self._tasks:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error
        return total_ns

    async def _open_channels(self) -> list[grpc.aio.Channel]:
        """The run's `connections` channels, ready; CallError when they are not within the dial timeout."""
        config = self.config
        channels = [config.aio_channel() for _ in range(config.connections)]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), config.dial_timeout)
        except TimeoutError:
            for channel in channels:
                await channel.close()
            raise CallError(f"cannot connect to {config.target} within {config.dial_timeout:g}s") from None
        return channels

    def _worker_for(self, method: Method) -> tuple[str, Callable[[str, Any, float], Coroutine[Any, Any, None]]]:
        """The channel's multicallable factory for the method's kind, and the worker that calls it."""
        if method.client_streaming and method.server_streaming:
            return "stream_stream", self._streaming_worker
        if method.client_streaming:
            return "stream_unary", self._streaming_worker
        if method.server_streaming:
            return "unary_stream", self._streaming_worker
        return "unary_unary", self._unary_worker


def run_load(config: LoadConfig) -> dict[str, Any]:
    """Blocking helper: resolve, run on a fresh event loop, return the report."""
    runner = LoadRunner(config)
    runner.prepare()
    return asyncio.run(runner.run())
