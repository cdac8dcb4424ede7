"""A local OpenAI-compatible server for tests and benchmarks: real HTTP, real SSE wire format.

    with FakeOpenAIServer() as server:                  # a thread, 127.0.0.1, port 0
        server.script(Behavior(status=429, retry_after=0.1), Behavior())   # next requests, in order
        ... LLM_ENDPOINTS={"fake": {"api_base": server.base_url}} ...
        server.requests, server.billed                  # what it received and what it billed

    with spawn_fake_openai(chunks=200) as base_url: ...   # a subprocess (benchmarks: its CPU is not ours)
    python -m tests.support.fake_openai --chunks 200     # prints "READY <base_url>"

`POST /v1/chat/completions` streams like OpenAI does (`stream_options.include_usage`: a role
chunk, one chunk per token, a finish chunk, a usage chunk with empty choices, `[DONE]`),
or answers in one JSON body when `stream` is false. A request's behaviour is the next one
scripted with `script()`, else the `X-Fake-Behavior` header (JSON of Behavior's fields), else
the server's default. Faults: an HTTP status with an OpenAI error body (and Retry-After), a
stall after N chunks, a connection closed after N chunks, no usage chunk, a slow first token.

Its usage is its own (whitespace words), deliberately not our tokenizer's, so a test can tell
a reported usage from an estimated one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

DEFAULT_TEXT = (
    "Streets built for cars move cars, streets built for people move people. A city centre without private "
    "traffic gives its space back to walking, cycling, buses and trade, and the places that tried it kept it."
)


@dataclass
class Behavior:
    text: str | None = None  # the reply (default: the server's text)
    chunks: int | None = None  # content chunks: the reply's words cycled to this many (default: one per word)
    status: int = 200  # anything else: an OpenAI-style error body with this status
    retry_after: float | None = None  # the Retry-After header of an error
    first_token_delay: float = 0.0  # after the role chunk, before the first content chunk
    chunk_delay: float = 0.0  # between content chunks
    stall_after: int | None = None  # send this many content chunks, then nothing (connection kept open)
    close_after: int | None = None  # send this many content chunks, then drop the connection
    usage: bool = True  # send the usage chunk when the client asks for it
    echo_auth: bool = False  # a careless provider: the error message repeats the Authorization header

    @classmethod
    def from_json(cls, text: str) -> Behavior:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in names})


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict
    behavior: Behavior


@dataclass
class Billed:
    model: str
    prompt_tokens: int
    completion_tokens: int
    usage_sent: bool
    outcome: str  # "complete" | "stalled" | "closed" | "error"


def prompt_tokens_of(body: dict) -> int:
    messages = body.get("messages") or []
    return sum(len(str(m.get("content") or "").split()) + 4 for m in messages) + 3


def content_chunks(text: str, chunks: int | None) -> list[str]:
    """The reply as token-like pieces: its words (cycled to `chunks` pieces if given)."""
    words = text.split() or ["ok"]
    count = len(words) if chunks is None else chunks
    return [(" " if i else "") + words[i % len(words)] for i in range(count)]


class FakeOpenAIServer:
    def __init__(
        self, *, text: str = DEFAULT_TEXT, default: Behavior | None = None, host: str = "127.0.0.1", port: int = 0
    ):
        self.text = text
        self.default = default or Behavior()
        self.host, self.port = host, port
        self.requests: list[RecordedRequest] = []
        self.billed: list[Billed] = []
        self._queue: list[Behavior] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._handlers: set[asyncio.Task] = set()
        self._counter = 0

    # ------------------------------------------------------------------ control

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, *behaviors: Behavior) -> None:
        """Behaviours of the next requests, in order; then the default again."""
        with self._lock:
            self._queue.extend(behaviors)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
        self.requests.clear()
        self.billed.clear()

    async def start_async(self) -> None:
        """Serve in the running loop (the thread mode calls this in its own loop)."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_async(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def start(self) -> FakeOpenAIServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as error:  # noqa: BLE001 - reported to the starting thread
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ HTTP

    def _next_behavior(self, headers: dict[str, str]) -> Behavior:
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
        if "x-fake-behavior" in headers:
            return Behavior.from_json(headers["x-fake-behavior"])
        return self.default

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            while True:  # keep-alive: one request after another on this connection
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {}
                for line in header_lines:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                raw = await reader.readexactly(length) if length else b""
                body = json.loads(raw) if raw else {}
                keep_open = await self._respond(method, path, headers, body, writer)
                if not keep_open or headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._handlers.discard(task)
            writer.transport.abort()

    async def _respond(self, method: str, path: str, headers: dict, body: dict, writer: asyncio.StreamWriter) -> bool:
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return await self._json(writer, 200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            return await self._json(
                writer, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}}
            )
        behavior = self._next_behavior(headers)
        self.requests.append(RecordedRequest(method, path, headers, body, behavior))
        model = str(body.get("model") or "")
        if behavior.status != 200:
            return await self._refuse(writer, behavior, model, headers)
        pieces = content_chunks(behavior.text or self.text, behavior.chunks)
        finish = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if max_tokens and len(pieces) > int(max_tokens):
            pieces, finish = pieces[: int(max_tokens)], "length"
        prompt_tokens = prompt_tokens_of(body)
        self._counter += 1
        ident = f"chatcmpl-fake{self._counter}"
        created = int(time.time())
        if not body.get("stream"):
            return await self._complete(writer, model, ident, created, pieces, finish, prompt_tokens)
        return await self._stream(writer, behavior, body, model, ident, created, pieces, finish, prompt_tokens)

    async def _refuse(self, writer: asyncio.StreamWriter, behavior: Behavior, model: str, headers: dict) -> bool:
        """The error status `behavior` asks for (429 with its Retry-After, or a server error)."""
        extra = {"Retry-After": f"{behavior.retry_after:g}"} if behavior.retry_after is not None else {}
        kind = "rate_limit_exceeded" if behavior.status == 429 else "server_error"
        self.billed.append(Billed(model, 0, 0, False, "error"))
        message = f"fake error {behavior.status}"
        if behavior.echo_auth:
            message += f" (you sent {headers.get('authorization', 'no key')})"
        return await self._json(
            writer,
            behavior.status,
            {"error": {"message": message, "type": kind, "param": None, "code": kind}},
            extra,
        )

    async def _complete(
        self,
        writer: asyncio.StreamWriter,
        model: str,
        ident: str,
        created: int,
        pieces: list[str],
        finish: str,
        prompt_tokens: int,
    ) -> bool:
        """A whole (non-streamed) chat completion, with its usage."""
        text = "".join(pieces)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        self.billed.append(Billed(model, prompt_tokens, len(pieces), True, "complete"))
        return await self._json(
            writer,
            200,
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": usage,
            },
        )

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        behavior: Behavior,
        body: dict,
        model: str,
        ident: str,
        created: int,
        pieces: list[str],
        finish: str,
        prompt_tokens: int,
    ) -> bool:
        """The completion as server-sent events, one chunk a piece, stalling, closing or leaving
        the usage out as `behavior` asks."""
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        )

        prefix = (
            '{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,"system_fingerprint":null,'  # noqa: UP031
            '"choices":' % (ident, created, json.dumps(model))
        )
        tail = ',"usage":null}' if include_usage else "}"

        def event(choices: str, suffix: str = tail) -> bytes:
            data = b"data: " + (prefix + choices + suffix).encode() + b"\n\n"
            return b"%x\r\n%s\r\n" % (len(data), data)

        def choice(delta: str, finish_reason: str | None = None) -> str:
            return '[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]' % (  # noqa: UP031
                delta,
                json.dumps(finish_reason),
            )

        writer.write(event(choice('{"role":"assistant","content":"","refusal":null}')))
        await writer.drain()
        sent = 0
        if behavior.first_token_delay:
            await asyncio.sleep(behavior.first_token_delay)
        for piece in pieces:
            if behavior.stall_after is not None and sent >= behavior.stall_after:
                self.billed.append(Billed(model, prompt_tokens, sent, False, "stalled"))
                await asyncio.sleep(3600)  # cancelled when the client gives up or the server stops
            if behavior.close_after is not None and sent >= behavior.close_after:
                self.billed.append(Billed(model, prompt_tokens, sent, False, "closed"))
                writer.transport.abort()
                return False
            if sent and behavior.chunk_delay:
                await asyncio.sleep(behavior.chunk_delay)
            writer.write(event(choice(json.dumps({"content": piece}, separators=(",", ":")))))
            await writer.drain()
            sent += 1
        writer.write(event(choice("{}", finish)))
        usage_sent = include_usage and behavior.usage
        if usage_sent:
            usage = json.dumps(
                {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": sent,
                    "total_tokens": prompt_tokens + sent,
                    "prompt_tokens_details": {"cached_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0},
                },
                separators=(",", ":"),
            )
            writer.write(event("[]", ',"usage":' + usage + "}"))
        data = b"data: [DONE]\n\n"
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        await writer.drain()
        self.billed.append(Billed(model, prompt_tokens, sent, usage_sent, "complete"))
        return True

    @staticmethod
    async def _json(writer: asyncio.StreamWriter, status: int, payload: dict, headers: dict | None = None) -> bool:
        body = json.dumps(payload).encode()
        reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}.get(
            status, "Error"
        )
        lines = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        return True


@contextlib.contextmanager
def spawn_fake_openai(**behavior) -> Iterator[str]:
    """A FakeOpenAIServer in a subprocess; yields its base_url. Keyword args: Behavior fields."""
    cmd = [sys.executable, "-m", "tests.support.fake_openai", "--behavior", json.dumps(behavior)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"fake OpenAI server did not start: {line!r}")
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=None, help="content chunks per reply")
    parser.add_argument("--behavior", default="{}", help="default Behavior as JSON")
    args = parser.parse_args(argv)
    default = Behavior.from_json(args.behavior)
    if args.chunks is not None:
        default.chunks = args.chunks

    async def serve() -> None:
        server = FakeOpenAIServer(default=default, host=args.host, port=args.port)
        await server.start_async()
        print("READY", server.base_url, flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
