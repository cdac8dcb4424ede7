"""The load driver: ghz's run model on grpc.aio.

`concurrency` workers share one counter of requests; each takes the next request number,
waits for its slot when `rps` is set (request i starts at t0 + i/rps, ghz's constant
schedule), makes the call and records its latency, status and error. Calls go through
generic multicallables (`channel.unary_unary(path, ...)` and friends) with the request
serialised once up front (unless the data is a template) and the reflected response class's
`FromString` as the deserialiser, so the per-call cost on this side is the gRPC core's and
little else. Workers are spread over `connections` channels, each with its own subchannel
pool so that they really are separate HTTP/2 connections.

Stops like ghz: after `total` calls (endReason "normal"); after `duration` (-z, total
ignored) or `max_duration` (-x) with endReason "timeout", where `duration_stop` says what
happens to calls still in flight ("close": cancelled and reported as Canceled, "wait":
awaited, "ignore": cancelled and left out); on Ctrl-C with endReason "cancel".
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.loadtest.reflection import CallError, Method, decode_json, resolve
from services.loadtest.report import (
    CallRecorder,
    MessageStats,
    RunOptions,
    build_report,
)

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

_TEMPLATE = re.compile(r"\{\{\s*(?:\.(\w+)|(newUUID))\s*\}\}")


def rpc_error(error: grpc.RpcError) -> tuple[str, str]:
    """(status, error) as ghz reports them: Go's code name and status.Error()'s text."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    name = GO_CODE_NAMES.get(code, "Unknown")
    details = error.details() if hasattr(error, "details") else str(error)
    return name, f"rpc error: code = {name} desc = {details or ''}"


@dataclass
class LoadConfig:
    target: str
    call: str
    data: str | None = None  # JSON text; may hold ghz call-template actions like {{.RequestNumber}}
    total: int = 200
    concurrency: int = 50
    duration: float = 0.0  # -z seconds; total is ignored when set
    max_duration: float = 0.0  # -x seconds; total is respected
    duration_stop: str = "close"
    rps: int = 0
    timeout: float = 20.0  # per call; 0 = none
    dial_timeout: float = 10.0
    keepalive: float = 0.0
    connections: int = 1
    insecure: bool = False
    cacert: str = ""
    cert: str = ""
    key: str = ""
    cname: str = ""
    authority: str = ""
    metadata: dict[str, str] | None = None
    protoset: str = ""
    name: str = ""
    tags: dict[str, str] | None = None
    skip_first: int = 0
    count_errors: bool = False
    enable_compression: bool = False
    # ghz's --stream-call-count / --stream-call-duration: the client ends a server stream
    # after this many messages or this long, and the call counts as OK.
    stream_call_count: int = 0
    stream_call_duration: float = 0.0
    # Request numbers of this run start here (a process of a multi-process run takes its
    # own range, so that {{.RequestNumber}} stays unique across processes).
    first_number: int = 0
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)

    def run_options(self, data: Any) -> RunOptions:
        return RunOptions(
            call=self.call,
            host=self.target,
            protoset=self.protoset,
            insecure=self.insecure,
            cacert=self.cacert,
            cert=self.cert,
            key=self.key,
            cname=self.cname,
            authority=self.authority,
            rps=self.rps,
            concurrency=self.concurrency,
            connections=self.connections,
            # ghz sets n to MaxInt32 when a duration is given (runner/options.go).
            total=2**31 - 1 if self.duration > 0 else self.total,
            duration_ns=int(self.duration * 1e9),
            timeout_ns=int(self.timeout * 1e9),
            dial_timeout_ns=int(self.dial_timeout * 1e9),
            keepalive_ns=int(self.keepalive * 1e9),
            data=data,
            metadata=self.metadata,
            cpus=self.cpus,
            name=self.name,
            skip_first=self.skip_first,
            count_errors=self.count_errors,
            enable_compression=self.enable_compression,
            tags=self.tags,
        )

    # --- channels --------------------------------------------------------------------------

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if self.insecure:
            return None

        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(read(self.cacert), read(self.key), read(self.cert))

    def channel_options(self, separate: bool) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
        if separate:
            options.append(("grpc.use_local_subchannel_pool", 1))
        if self.cname:
            options.append(("grpc.ssl_target_name_override", self.cname))
        if self.authority:
            options.append(("grpc.default_authority", self.authority))
        if self.keepalive > 0:
            options.append(("grpc.keepalive_time_ms", int(self.keepalive * 1000)))
        return options

    def sync_channel(self) -> grpc.Channel:
        creds = self._credentials()
        if creds is None:
            return grpc.insecure_channel(self.target, options=self.channel_options(False))
        return grpc.secure_channel(self.target, creds, options=self.channel_options(False))

    def aio_channel(self) -> grpc.aio.Channel:
        creds = self._credentials()
        compression = grpc.Compression.Gzip if self.enable_compression else None
        if creds is None:
            return grpc.aio.insecure_channel(self.target, options=self.channel_options(True), compression=compression)
        return grpc.aio.secure_channel(self.target, creds, options=self.channel_options(True), compression=compression)


class Payloads:
    """The request bytes of request number i: pre-serialised, or rendered from the template."""

    def __init__(self, method: Method, data_text: str | None):
        self.method = method
        self.template: str | None = None
        self.data: Any = None
        self.fixed: list[bytes] = []
        text = data_text if data_text is not None and data_text.strip() else "{}"
        if _TEMPLATE.search(text):
            self.template = text
            # Reported as ghz does (the JSON as given); rendered and parsed once now so that a
            # bad template fails before the run rather than on every call.
            try:
                self.data = decode_json(text, "data")
            except CallError:
                self.data = text
            self._render_messages(0, "0")
        else:
            self.data = decode_json(text, "data")
            self.fixed = [m.SerializeToString() for m in method.parse_messages(self.data)]

    def _context(self, number: int, worker_id: str) -> dict[str, str]:
        now_ns = time.time_ns()
        m = self.method
        return {
            "WorkerID": worker_id,
            "RequestNumber": str(number),
            "FullyQualifiedName": m.full_name,
            "MethodName": m.name,
            "ServiceName": m.service,
            "InputName": m.descriptor.input_type.full_name,
            "OutputName": m.descriptor.output_type.full_name,
            "IsClientStreaming": str(m.client_streaming).lower(),
            "IsServerStreaming": str(m.server_streaming).lower(),
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ns / 1e9)),
            "TimestampUnix": str(now_ns // 1_000_000_000),
            "TimestampUnixMilli": str(now_ns // 1_000_000),
            "TimestampUnixNano": str(now_ns),
            "UUID": str(uuid.uuid4()),
        }

    def _render_messages(self, number: int, worker_id: str) -> list[bytes]:
        assert self.template is not None
        context = self._context(number, worker_id)

        def sub(match: re.Match) -> str:
            if match.group(2):
                return str(uuid.uuid4())
            key = match.group(1)
            if key not in context:
                raise CallError(f"data template: unknown field .{key}")
            return context[key]

        rendered = _TEMPLATE.sub(sub, self.template)
        data = decode_json(rendered, "data (after the template)")
        return [m.SerializeToString() for m in self.method.parse_messages(data)]

    def for_call(self, number: int, worker_id: str) -> list[bytes]:
        """All messages of a call (client streaming) or a one-item list (unary requests,
        round-robin over a data list)."""
        if self.template is not None:
            messages = self._render_messages(number, worker_id)
        else:
            messages = self.fixed
        if self.method.client_streaming:
            return messages
        return [messages[number % len(messages)]]


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
        self._tasks: list[asyncio.Task] = []

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

    async def _unary_worker(self, worker_id: str, multicallable, t0: float) -> None:
        timeout = self.config.timeout or None
        metadata = tuple(self.config.metadata.items()) if self.config.metadata else None
        payloads = self.payloads
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

    async def _streaming_worker(self, worker_id: str, multicallable, t0: float) -> None:
        timeout = self.config.timeout or None
        metadata = tuple(self.config.metadata.items()) if self.config.metadata else None
        method = self.method
        perf, wall = time.perf_counter_ns, time.time_ns
        while (number := self._take()) is not None:
            if not await self._pace(number, t0):
                return
            requests = self.payloads.for_call(number, worker_id)
            gaps: list[int] = []
            start = perf()
            status, text = "OK", ""
            try:
                if method.client_streaming and not method.server_streaming:
                    await multicallable(iter(requests), timeout=timeout, metadata=metadata)
                else:
                    request = iter(requests) if method.client_streaming else requests[0]
                    call = multicallable(request, timeout=timeout, metadata=metadata)
                    previous = start
                    cap = self.config.stream_call_count
                    until = (
                        start + int(self.config.stream_call_duration * 1e9)
                        if self.config.stream_call_duration > 0
                        else 0
                    )
                    while True:
                        if until:
                            left = (until - perf()) / 1e9
                            if left <= 0:
                                call.cancel()
                                break
                            try:
                                message = await asyncio.wait_for(call.read(), left)
                            except TimeoutError:
                                call.cancel()
                                break
                        else:
                            message = await call.read()
                        if message is grpc.aio.EOF:
                            break
                        now = perf()
                        gaps.append(now - previous)
                        previous = now
                        if cap and len(gaps) >= cap:
                            call.cancel()
                            break
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
        channels = [config.aio_channel() for _ in range(config.connections)]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), config.dial_timeout)
        except TimeoutError:
            for channel in channels:
                await channel.close()
            raise CallError(f"cannot connect to {config.target} within {config.dial_timeout:g}s") from None
        deserializer = method.response_class.FromString
        if method.client_streaming and method.server_streaming:
            factory, worker = "stream_stream", self._streaming_worker
        elif method.client_streaming:
            factory, worker = "stream_unary", self._streaming_worker
        elif method.server_streaming:
            factory, worker = "unary_stream", self._streaming_worker
        else:
            factory, worker = "unary_unary", self._unary_worker
        callables = [
            getattr(c, factory)(method.path, request_serializer=None, response_deserializer=deserializer)
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
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
        return total_ns


def run_load(config: LoadConfig) -> dict[str, Any]:
    """Blocking helper: resolve, run on a fresh event loop, return the report."""
    runner = LoadRunner(config)
    runner.prepare()
    return asyncio.run(runner.run())
