"""A fast fake OpenAI-compatible provider for scale runs: hundreds of concurrent streams, paced like
a real model, from processes of their own whose CPU is measured apart.

    with spawn_fast_provider(processes=2, tokens_per_second=50, chunks=200) as provider:
        provider.base_url                   # e.g. http://127.0.0.1:41234/v1, every process on that port
        provider.stats()                    # {"requests", "completed", "chunks", "completion_tokens", ...}, summed
        provider.cpu_seconds()              # user + system CPU of the provider's processes so far
    python -m tests.support.fast_provider --tokens-per-second 50 --chunks 200 [--port P --reuse-port]

What it serves: `POST …/chat/completions` with `stream: true`, as OpenAI streams it
(`stream_options.include_usage`): a role chunk at once, then after `first_token_latency` one
content chunk every 1/`tokens_per_second` seconds, ONE token per chunk and ONE server-sent event
per network write (so each arrives in its own read, as a real model's tokens do), then the finish
chunk, the usage chunk (the real counts of what was sent: prompt as whitespace words plus
overheads, completion one token a chunk) and `[DONE]`. A reply is `chunks` tokens, cut to the
request's `max_tokens` (finish "length"). Nothing else: no faults, no scripts, no other routes
(tests/support/fake_openai.py is the fake that fails on demand; the events' shape, the text and
the usage object are its own, reused here).

Why another fake: fake_openai.py runs a coroutine per stream on asyncio's loop, with an
`asyncio.sleep` and a `drain` per chunk; at 600 concurrent streams of 50 tokens a second (30,000
chunks a second) its CPU is more than the orchestrator's it is meant to measure. Here every
process runs on uvloop, parses requests with httptools, and paces all its streams from one heap
of due times and one timer: a due chunk costs one heap step, a few string joins and one
`transport.write`. Several processes share the port (SO_REUSEPORT: the kernel spreads the
orchestrator's connections over them); each answers `stats` on its stdin with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httptools
import psutil

from tests.support.fake_openai import DEFAULT_TEXT, _Events, content_chunks, prompt_tokens_of, reported_usage

_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
)
_DONE = b"%x\r\n%s\r\n0\r\n\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n")


def _error(status: int, message: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    return b"HTTP/1.1 %d Error\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


@dataclass
class Stats:
    requests: int = 0  # completions asked for
    completed: int = 0  # streams sent to their [DONE]
    gone: int = 0  # streams whose client went away first
    chunks: int = 0  # content chunks written (one token each)
    prompt_tokens: int = 0  # of completed streams, as reported in their usage
    completion_tokens: int = 0


class _Stream:
    __slots__ = ("connection", "events", "meter_prompt", "pieces", "sent")

    def __init__(self, connection: _Connection, events: _Events, pieces: list[str], prompt: int):
        self.connection, self.events, self.pieces, self.meter_prompt = connection, events, pieces, prompt
        self.sent = 0


@dataclass
class Pacer:
    """Every stream of the process on one heap of due times, one timer armed for the earliest."""

    interval: float  # seconds between content chunks
    first_token_latency: float
    stats: Stats
    _heap: list = field(default_factory=list)
    _order: itertools.count = field(default_factory=itertools.count)
    _timer: asyncio.TimerHandle | None = None
    _armed_at: float = float("inf")

    def add(self, stream: _Stream) -> None:
        loop = asyncio.get_running_loop()
        self._push(loop, loop.time() + self.first_token_latency, stream)

    def _push(self, loop: asyncio.AbstractEventLoop, due: float, stream: _Stream) -> None:
        heapq.heappush(self._heap, (due, next(self._order), stream))
        if due < self._armed_at:
            if self._timer is not None:
                self._timer.cancel()
            self._armed_at = due
            self._timer = loop.call_at(due, self._tick)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer, self._armed_at = None, float("inf")
        # The loop's timers fire on whole milliseconds, possibly just before `due`: whatever is due
        # within the next millisecond goes now (else the timer would fire again and again early).
        heap, now, stats = self._heap, loop.time() + 0.001, self.stats
        while heap and heap[0][0] <= now:
            due, _, stream = heapq.heappop(heap)
            transport = stream.connection.transport
            if transport is None or transport.is_closing():
                stats.gone += 1
                continue
            pieces = stream.pieces
            if stream.sent < len(pieces):
                events = stream.events
                piece = pieces[stream.sent]
                transport.write(events.event(_CHOICES.get(piece) or _Events.choice(_delta(piece))))
                stream.sent += 1
                stats.chunks += 1
                heapq.heappush(heap, (due + self.interval, next(self._order), stream))
            else:
                self._finish(stream)
        if heap:
            self._armed_at = heap[0][0]
            self._timer = loop.call_at(self._armed_at, self._tick)

    def _finish(self, stream: _Stream) -> None:
        events, completion = stream.events, stream.sent
        finish = "length" if stream.connection.cut else "stop"
        tail = events.event(events.choice("{}", finish))
        if stream.connection.include_usage:
            usage = reported_usage("openai", prompt=stream.meter_prompt, answer=completion, reasoning=0)
            tail += events.event("[]", ',"usage":' + json.dumps(usage, separators=(",", ":")) + "}")
        stream.connection.transport.write(tail + _DONE)
        self.stats.completed += 1
        self.stats.prompt_tokens += stream.meter_prompt
        self.stats.completion_tokens += completion
        stream.connection.busy = False


def _delta(piece: str) -> str:
    return json.dumps({"content": piece}, separators=(",", ":"))


_PIECES = content_chunks(DEFAULT_TEXT, None)
_CHOICES = {piece: _Events.choice(_delta(piece)) for piece in _PIECES + [p.lstrip() for p in _PIECES]}


class _Connection(asyncio.Protocol):
    """One client connection: requests parsed by httptools, one stream at a time (HTTP/1.1)."""

    def __init__(self, server: FastProvider):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.busy = False
        self.cut = False
        self.include_usage = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_error(400, "malformed request"))
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, raw = self.url, b"".join(self.body)
        self.url, self.body = b"", []
        transport = self.transport
        if transport is None:
            return
        if not url.rstrip(b"/").endswith(b"/chat/completions"):
            transport.write(_error(404, f"no route {url.decode('latin-1')}"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            transport.write(_error(400, "the body is not JSON"))
            return
        if not body.get("stream"):
            transport.write(_error(400, "this fake streams only"))
            return
        self.server.start_stream(self, body)


class FastProvider:
    def __init__(self, *, tokens_per_second: float, first_token_latency: float, chunks: int):
        self.stats = Stats()
        self.chunks = chunks
        self.pacer = Pacer(1.0 / tokens_per_second if tokens_per_second else 0.0, first_token_latency, self.stats)
        self._counter = itertools.count(1)

    def start_stream(self, connection: _Connection, body: dict) -> None:
        self.stats.requests += 1
        pieces = content_chunks(DEFAULT_TEXT, self.chunks)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        connection.cut = bool(max_tokens) and len(pieces) > int(max_tokens)
        if connection.cut:
            pieces = pieces[: int(max_tokens)]
        connection.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        connection.busy = True
        model = str(body.get("model") or "")
        events = _Events(None, f"chatcmpl-fast{next(self._counter)}", int(time.time()), model, connection.include_usage)  # type: ignore[arg-type]
        assert connection.transport is not None
        connection.transport.write(_HEAD + events.event(events.choice('{"role":"assistant","content":""}')))
        self.pacer.add(_Stream(connection, events, pieces, prompt_tokens_of(body)))


async def serve(
    *, host: str, port: int, reuse_port: bool, tokens_per_second: float, first_token_latency: float, chunks: int
) -> None:
    """Serves until stdin closes; answers each `stats` line on stdin with the stats as JSON."""
    provider = FastProvider(tokens_per_second=tokens_per_second, first_token_latency=first_token_latency, chunks=chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(provider), host, port, reuse_port=reuse_port or None, backlog=4096
    )
    port = server.sockets[0].getsockname()[1]
    print(f"READY http://{host}:{port}/v1 {os.getpid()}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"stats":
            print(json.dumps(provider.stats.__dict__), flush=True)
    server.close()


@dataclass
class ProviderProcesses:
    """The processes of a spawned fast provider, all on one port."""

    base_url: str
    processes: list[subprocess.Popen]

    def stats(self) -> dict[str, int]:
        """Every process's Stats, summed."""
        total: dict[str, int] = {}
        for process in self.processes:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write("stats\n")
            process.stdin.flush()
            for key, value in json.loads(process.stdout.readline()).items():
                total[key] = total.get(key, 0) + value
        return total

    def pids(self) -> set[int]:
        return {process.pid for process in self.processes}

    def cpu_seconds(self) -> float:
        """User + system CPU time of the provider's processes so far."""
        total = 0.0
        for process in self.processes:
            times = psutil.Process(process.pid).cpu_times()
            total += times.user + times.system
        return total


@contextlib.contextmanager
def spawn_fast_provider(
    *, processes: int = 1, tokens_per_second: float = 50.0, first_token_latency: float = 0.3, chunks: int = 200
) -> Iterator[ProviderProcesses]:
    """`processes` provider processes sharing one port on 127.0.0.1 (SO_REUSEPORT)."""
    args = [
        f"--tokens-per-second={tokens_per_second}",
        f"--first-token-latency={first_token_latency}",
        f"--chunks={chunks}",
    ]
    started: list[subprocess.Popen] = []
    try:
        port, base_url = 0, ""
        for _ in range(max(1, processes)):
            cmd = [sys.executable, "-m", "tests.support.fast_provider", "--reuse-port", f"--port={port}", *args]
            process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            started.append(process)
            line = process.stdout.readline() if process.stdout else ""
            if not line.startswith("READY "):
                raise RuntimeError(f"the fast provider did not start: {line!r}")
            base_url = line.split()[1]
            port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        yield ProviderProcesses(base_url, started)
    finally:
        for process in started:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            process.terminate()
        for process in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reuse-port", action="store_true", help="share the port with other processes")
    parser.add_argument("--tokens-per-second", type=float, default=50.0)
    parser.add_argument("--first-token-latency", type=float, default=0.3)
    parser.add_argument("--chunks", type=int, default=200, help="tokens (content chunks) per reply")
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(
            serve(
                host=args.host,
                port=args.port,
                reuse_port=args.reuse_port,
                tokens_per_second=args.tokens_per_second,
                first_token_latency=args.first_token_latency,
                chunks=args.chunks,
            )
        )


if __name__ == "__main__":
    main()
