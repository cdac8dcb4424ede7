"""A local OpenAI-compatible server for tests and benchmarks: real HTTP, real SSE wire format.

    with FakeOpenAIServer() as server:                  # a thread, 127.0.0.1, port 0
        server.script(Behavior(status=429, retry_after=0.1), Behavior())   # next requests, in order
        server.script_model("a", Behavior(stall_after=2))  # the next requests for model "a" (fake/a)
        server.model_default("judge", Behavior(text='{"debaters": ...}'))  # "judge" once its script is spent
        ... LLM_ENDPOINTS={"fake": {"api_base": server.base_url}} ...
        server.requests, server.billed                  # what it received and what it billed

    with spawn_fake_openai(chunks=200) as base_url: ...   # a subprocess (benchmarks: its CPU is not ours)
    python -m tests.support.fake_openai --chunks 200     # prints "READY <base_url>"

`POST /v1/messages` streams as Anthropic's Messages API does (for LiteLLM's Anthropic provider,
pointed here by ANTHROPIC_API_BASE), with the same behaviours where they apply.
`POST /v1/chat/completions` streams like OpenAI does (`stream_options.include_usage`: a role
chunk, one chunk per token, a finish chunk, a usage chunk with empty choices, `[DONE]`),
or answers in one JSON body when `stream` is false. A request's behaviour is the next one
scripted for its model with `script_model()` (the model as the server receives it: "a" for
`fake/a`), else the next one scripted with `script()`, else the `X-Fake-Behavior` header (JSON of
Behavior's fields), else its model's default (`model_default()`), else the server's default.
Per-model scripts keep a test deterministic when several models' calls arrive at once.
Faults: an HTTP status with an OpenAI error body (and Retry-After), a stall after N chunks, a
connection closed after N chunks, no usage chunk, a slow first token.
Quirks of real providers: reasoning deltas before the answer (`reasoning_chunks`, DeepSeek's
and vLLM's `reasoning_content` or OpenRouter's `reasoning`), usage in another provider's
convention (`usage_convention`: reasoning counted outside completion_tokens, Anthropic's cache
fields outside prompt_tokens, DeepSeek's cache hit/miss), cache reads and writes, content as a
list of typed blocks (`content_blocks`), and a malformed chunk (`bad_chunk`, see BAD_CHUNKS).

Its usage is its own (whitespace words), deliberately not our tokenizer's, so a test can tell
a reported usage from an estimated one; `FakeOpenAIServer(tokenizer=True, count_model_prefix=
"fake/")` counts with our tokenizer instead (prompt: `count_message_tokens` of the messages as
sent; completion: `count_text_tokens` of the answer plus that of the reasoning, as the LLM
layer's callers estimate a call cut short), with the model named as we name it.

`server.billed` is the provider's own bill, one `Billed` per request in our normal form (cache
reads and writes part of prompt_tokens, reasoning part of completion_tokens), whatever
convention the usage chunk was reported in: a complete call, an error (nothing), a stall or a
dropped connection (what it sent before), a malformed chunk (what it sent before it), a
client that went away mid-stream ("disconnected": what it sent before it noticed), or before
any answer ("unanswered": nothing). Bills come in the order the calls end; `Billed.request` is
the index of the request billed in `server.requests` (the order the calls came).
`Billed.usage()` is that bill as a `Usage`, to price with `cost_of`.
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

from services.common.tokens import count_message_tokens, count_text_tokens
from services.common.usage import Usage

DEFAULT_TEXT = (
    "Streets built for cars move cars, streets built for people move people. A city centre without private "
    "traffic gives its space back to walking, cycling, buses and trade, and the places that tried it kept it."
)
DEFAULT_REASONING = "First weigh what the other side will say, then pick the strongest two points and answer."

# Usage conventions of `Behavior.usage_convention` (P: the whole prompt, cache reads R and writes W
# included; C: answer tokens; T: reasoning tokens):
# - "openai": prompt_tokens P, completion_tokens C+T, prompt_tokens_details.cached_tokens R (and
#   cache_write_tokens W when W), completion_tokens_details.reasoning_tokens T, total P+C+T;
# - "reasoning_outside" (Gemini's OpenAI-compatible API): completion_tokens C, reasoning_tokens T
#   beside it, total P+C+T;
# - "anthropic_cache" (an OpenAI-shaped usage carrying Anthropic's figures): prompt_tokens P-R-W,
#   cache_read_input_tokens R and cache_creation_input_tokens W beside it, total P+C+T;
# - "deepseek": prompt_tokens P, prompt_cache_hit_tokens R, prompt_cache_miss_tokens P-R.
USAGE_CONVENTIONS = ("openai", "reasoning_outside", "anthropic_cache", "deepseek")

# Malformed payloads of `Behavior.bad_chunk` (the SSE data line's payload; {c} the chunk's prefix).
BAD_CHUNKS = {
    "content_number": '{c}[{{"index":0,"delta":{{"content":42}},"finish_reason":null}}]}}',
    "content_dict": '{c}[{{"index":0,"delta":{{"content":{{"text":" word"}}}},"finish_reason":null}}]}}',
    "content_block_unknown": '{c}[{{"index":0,"delta":{{"content":[{{"type":"audio","data":"AAAA"}}]}},'
    '"finish_reason":null}}]}}',
    "reasoning_number": '{c}[{{"index":0,"delta":{{"reasoning_content":7}},"finish_reason":null}}]}}',
    "delta_not_object": '{c}[{{"index":0,"delta":"word","finish_reason":null}}]}}',
    "choice_not_object": '{c}["word"]}}',
    "choices_not_list": '{c}{{"0":{{"index":0,"delta":{{"content":" word"}}}}}}}}',
    "usage_not_dict": '{c}[],"usage":"lots"}}',
    "not_object": "[1,2,3]",
    "not_json": '{{"choices":[{{"delta":',
}


@dataclass
class Behavior:
    text: str | None = None  # the reply (default: the server's text)
    chunks: int | None = None  # content chunks: the reply's words cycled to this many (default: one per word)
    status: int = 200  # anything else: an OpenAI-style error body with this status
    retry_after: float | None = None  # the Retry-After header of an error
    answer_delay: float = 0.0  # before the status line (a provider still queueing the request)
    first_token_delay: float = 0.0  # after the role chunk, before the first content chunk
    chunk_delay: float = 0.0  # between content chunks
    stall_after: int | None = None  # send this many content chunks, then nothing (connection kept open)
    close_after: int | None = None  # send this many content chunks, then drop the connection
    usage: bool = True  # send the usage chunk when the client asks for it
    echo_auth: bool = False  # a careless provider: the error message repeats the Authorization header
    # Reasoning deltas before the answer: this many pieces of `reasoning_text` (words, cycled), each
    # after `reasoning_delay` seconds, in the delta field `reasoning_field` ("reasoning_content" as
    # DeepSeek and vLLM send it, "reasoning" as OpenRouter and newer vLLM do).
    reasoning_chunks: int = 0
    reasoning_delay: float = 0.0
    reasoning_field: str = "reasoning_content"
    reasoning_text: str | None = None
    # Reasoning tokens billed and reported (default: those streamed). More than streamed: hidden
    # thoughts (Gemini), e.g. chunks=17, reasoning_tokens=57.
    reasoning_tokens: int | None = None
    usage_convention: str = "openai"  # see USAGE_CONVENTIONS
    total_tokens: bool = True  # report total_tokens in the usage (False: leave it out)
    cached_tokens: int = 0  # prompt tokens read from the cache (part of the prompt)
    cache_creation_tokens: int = 0  # prompt tokens written to the cache (part of the prompt)
    # content as [{"type": "text", "text": piece}] instead of a string (and reasoning as
    # [{"type": "thinking", "thinking": piece}] in content, as Anthropic-style proxies send it)
    content_blocks: bool = False
    bad_chunk: str | None = None  # a key of BAD_CHUNKS, sent after `bad_chunk_after` content chunks
    bad_chunk_after: int = 0

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
    """What the provider billed for one request, in our normal form: cache reads and writes are
    parts of prompt_tokens, reasoning part of completion_tokens."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    usage_sent: bool
    # "complete" | "stalled" | "closed" | "bad_chunk" | "disconnected" | "error" or "unanswered" (0 tokens)
    outcome: str
    reasoning_tokens: int = 0
    cached_prompt_tokens: int = 0
    cache_creation_prompt_tokens: int = 0
    request: int = -1  # the index in `server.requests` of the request it bills (bills come in the order calls end)

    def usage(self) -> Usage:
        """The bill as a Usage (estimated False: it is the provider's own count)."""
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens,
            reasoning_tokens=self.reasoning_tokens,
            cache_creation_prompt_tokens=self.cache_creation_prompt_tokens,
        )


def prompt_tokens_of(body: dict) -> int:
    messages = body.get("messages") or []
    return sum(len(str(m.get("content") or "").split()) + 4 for m in messages) + 3


def anthropic_as_openai(body: dict) -> dict:
    """An Anthropic Messages request as the OpenAI-style chat body it came from (its system
    prompt first, each content's text blocks joined), so it is counted as that body would be."""

    def text(content: object) -> str:
        if isinstance(content, list):
            return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
        return str(content or "")

    messages = [{"role": "system", "content": text(body["system"])}] if body.get("system") else []
    messages += [{"role": m.get("role", ""), "content": text(m.get("content"))} for m in body.get("messages") or []]
    return {**body, "messages": messages}


def content_chunks(text: str, chunks: int | None) -> list[str]:
    """The reply as token-like pieces: its words (cycled to `chunks` pieces if given)."""
    words = text.split() or ["ok"]
    count = len(words) if chunks is None else chunks
    return [(" " if i else "") + words[i % len(words)] for i in range(count)]


def reported_usage(
    convention: str,
    *,
    prompt: int,
    answer: int,
    reasoning: int,
    cached: int = 0,
    cache_creation: int = 0,
    total: bool = True,
) -> dict:
    """The usage object a provider of `convention` reports for a call that billed `prompt` prompt
    tokens (`cached` and `cache_creation` of them cache reads and writes), `answer` answer tokens
    and `reasoning` reasoning tokens (see USAGE_CONVENTIONS)."""
    if convention not in USAGE_CONVENTIONS:
        raise ValueError(f"unknown usage convention {convention!r}")
    completion = answer + reasoning
    usage: dict = {
        "prompt_tokens": prompt,
        "completion_tokens": answer if convention == "reasoning_outside" else completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    if cache_creation and convention in ("openai", "reasoning_outside"):
        usage["prompt_tokens_details"]["cache_write_tokens"] = cache_creation
    if convention == "anthropic_cache":
        usage["prompt_tokens"] = prompt - cached - cache_creation
        del usage["prompt_tokens_details"]
        usage["cache_read_input_tokens"] = cached
        usage["cache_creation_input_tokens"] = cache_creation
    elif convention == "deepseek":
        usage.pop("prompt_tokens_details")
        usage["prompt_cache_hit_tokens"] = cached
        usage["prompt_cache_miss_tokens"] = prompt - cached
    if not total:
        del usage["total_tokens"]
    return usage


class _Meter:
    """What one streamed request has sent so far, counted as the server counts."""

    def __init__(self, server: FakeOpenAIServer, model: str, body: dict, behavior: Behavior, request: int = -1):
        self.server, self.model, self.behavior, self.request = server, model, behavior, request
        prompt = server.count_prompt(model, body)
        self.prompt = prompt
        self.cached = min(max(0, behavior.cached_tokens), prompt)
        self.cache_creation = min(max(0, behavior.cache_creation_tokens), prompt - self.cached)
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.billed = False

    def answer_tokens(self) -> int:
        return self.server.count_completion(self.model, self.text)

    def reasoning_tokens(self, *, complete: bool) -> int:
        if complete and self.behavior.reasoning_tokens is not None:
            return self.behavior.reasoning_tokens
        return self.server.count_completion(self.model, self.reasoning)

    def bill(self, outcome: str, *, usage_sent: bool = False) -> Billed:
        """Records the bill once (a request that is cut after it was billed is not billed again)."""
        reasoning = self.reasoning_tokens(complete=outcome == "complete")
        billed = Billed(
            self.model,
            self.prompt,
            self.answer_tokens() + reasoning,
            usage_sent,
            outcome,
            reasoning_tokens=reasoning,
            cached_prompt_tokens=self.cached,
            cache_creation_prompt_tokens=self.cache_creation,
            request=self.request,
        )
        if not self.billed:
            self.billed = True
            self.server.billed.append(billed)
        return billed


class _Events:
    """Server-sent events of one streamed completion, in HTTP chunked framing."""

    def __init__(self, writer: asyncio.StreamWriter, ident: str, created: int, model: str, include_usage: bool):
        self.writer = writer
        self.prefix = (
            '{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,"system_fingerprint":null,'  # noqa: UP031
            '"choices":' % (ident, created, json.dumps(model))
        )
        self.tail = ',"usage":null}' if include_usage else "}"

    @staticmethod
    def frame(payload: str) -> bytes:
        data = b"data: " + payload.encode() + b"\n\n"
        return b"%x\r\n%s\r\n" % (len(data), data)

    def event(self, choices: str, suffix: str | None = None) -> bytes:
        return self.frame(self.prefix + choices + (self.tail if suffix is None else suffix))

    @staticmethod
    def choice(delta: str, finish_reason: str | None = None) -> str:
        return '[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]' % (  # noqa: UP031
            delta,
            json.dumps(finish_reason),
        )

    async def send(self, choices: str) -> None:
        self.writer.write(self.event(choices))
        await self.writer.drain()


class _Gone(Exception):
    """The client closed the connection while the server was waiting."""


class FakeOpenAIServer:
    def __init__(
        self,
        *,
        text: str = DEFAULT_TEXT,
        default: Behavior | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tokenizer: bool = False,
        count_model_prefix: str = "",
    ):
        """`tokenizer`: count tokens with our tokenizer (services.common.tokens), the model named
        `count_model_prefix + <model as sent>` (e.g. "fake/"), instead of whitespace words."""
        self.text = text
        self.default = default or Behavior()
        self.host, self.port = host, port
        self.tokenizer, self.count_model_prefix = tokenizer, count_model_prefix
        self._counting = (tokenizer, count_model_prefix)
        self.requests: list[RecordedRequest] = []
        self.billed: list[Billed] = []
        self._queue: list[Behavior] = []
        self._model_queues: dict[str, list[Behavior]] = {}
        self._model_defaults: dict[str, Behavior] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._handlers: set[asyncio.Task] = set()
        self._counter = 0

    # ------------------------------------------------------------------ counting

    def count_prompt(self, model: str, body: dict) -> int:
        """The prompt tokens of a request body: whitespace words plus overheads, or our tokenizer's
        count of its messages (`tokenizer`)."""
        if self.tokenizer:
            return count_message_tokens(self.count_model_prefix + model, body.get("messages") or [])
        return prompt_tokens_of(body)

    def count_completion(self, model: str, pieces: list[str]) -> int:
        """Tokens of streamed pieces: one a piece, or our tokenizer's count of their text (`tokenizer`)."""
        if not self.tokenizer:
            return len(pieces)
        text = "".join(pieces)
        return count_text_tokens(self.count_model_prefix + model, text) if text else 0

    # ------------------------------------------------------------------ control

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """ANTHROPIC_API_BASE for LiteLLM's Anthropic provider (it appends /v1/messages)."""
        return f"http://{self.host}:{self.port}"

    def script(self, *behaviors: Behavior) -> None:
        """Behaviours of the next requests, in order; then the default again."""
        with self._lock:
            self._queue.extend(behaviors)

    def script_model(self, model: str, *behaviors: Behavior) -> None:
        """Behaviours of the next requests for `model` (as the server receives it: "a" for
        `fake/a`), in order, before the global script; then the global script or default again."""
        with self._lock:
            self._model_queues.setdefault(model, []).extend(behaviors)

    def model_default(self, model: str, behavior: Behavior | None) -> None:
        """`model`'s behaviour once its script and the global one are spent (None: the server's
        default again)."""
        with self._lock:
            if behavior is None:
                self._model_defaults.pop(model, None)
            else:
                self._model_defaults[model] = behavior

    def scripted(self, model: str | None = None) -> int:
        """Behaviours still scripted for `model` (None: in the global script)."""
        with self._lock:
            return len(self._queue if model is None else self._model_queues.get(model, ()))

    def reset(self) -> None:
        """No script, requests or bills; counting as the server was built with."""
        with self._lock:
            self._queue.clear()
            self._model_queues.clear()
            self._model_defaults.clear()
        self.requests.clear()
        self.billed.clear()
        self.tokenizer, self.count_model_prefix = self._counting

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

    def _next_behavior(self, headers: dict[str, str], model: str) -> Behavior:
        with self._lock:
            queue = self._model_queues.get(model)
            if queue:
                return queue.pop(0)
            if self._queue:
                return self._queue.pop(0)
            if "x-fake-behavior" in headers:
                return Behavior.from_json(headers["x-fake-behavior"])
            return self._model_defaults.get(model, self.default)

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
                keep_open = await self._respond(method, path, headers, body, writer, reader)
                if not keep_open or headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._handlers.discard(task)
            writer.transport.abort()

    async def _respond(
        self,
        method: str,
        path: str,
        headers: dict,
        body: dict,
        writer: asyncio.StreamWriter,
        reader: asyncio.StreamReader | None = None,
    ) -> bool:
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return await self._json(writer, 200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        anthropic = method == "POST" and path.rstrip("/").endswith("/v1/messages")
        if not anthropic and (method != "POST" or not path.rstrip("/").endswith("/chat/completions")):
            return await self._json(
                writer, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}}
            )
        model = str(body.get("model") or "")
        behavior = self._next_behavior(headers, model)
        self.requests.append(RecordedRequest(method, path, headers, body, behavior))
        index = len(self.requests) - 1
        try:
            await self._pause(behavior.answer_delay, reader)
        except _Gone:  # the client gave up before any answer: nothing billed
            self.billed.append(Billed(model, 0, 0, False, "unanswered", request=index))
            return False
        if behavior.status != 200:
            return await self._refuse(writer, behavior, model, headers, index)
        pieces = content_chunks(behavior.text or self.text, behavior.chunks)
        finish = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if max_tokens and len(pieces) > int(max_tokens):
            pieces, finish = pieces[: int(max_tokens)], "length"
        meter = _Meter(self, model, anthropic_as_openai(body) if anthropic else body, behavior, index)
        self._counter += 1
        ident = f"chatcmpl-fake{self._counter}"
        created = int(time.time())
        if anthropic:
            return await self._anthropic_stream(writer, reader, meter, pieces, finish)
        if not body.get("stream"):
            return await self._complete(writer, meter, ident, created, pieces, finish)
        return await self._stream(writer, reader, meter, body, ident, created, pieces, finish)

    async def _refuse(
        self, writer: asyncio.StreamWriter, behavior: Behavior, model: str, headers: dict, request: int = -1
    ) -> bool:
        """The error status `behavior` asks for (429 with its Retry-After, or a server error)."""
        extra = {"Retry-After": f"{behavior.retry_after:g}"} if behavior.retry_after is not None else {}
        kind = "rate_limit_exceeded" if behavior.status == 429 else "server_error"
        self.billed.append(Billed(model, 0, 0, False, "error", request=request))
        message = f"fake error {behavior.status}"
        if behavior.echo_auth:
            message += f" (you sent {headers.get('authorization', 'no key')})"
        return await self._json(
            writer,
            behavior.status,
            {"error": {"message": message, "type": kind, "param": None, "code": kind}},
            extra,
        )

    @staticmethod
    def _usage(meter: _Meter) -> dict:
        """The usage chunk's object for a complete call, in the behaviour's convention."""
        behavior = meter.behavior
        return reported_usage(
            behavior.usage_convention,
            prompt=meter.prompt,
            answer=meter.answer_tokens(),
            reasoning=meter.reasoning_tokens(complete=True),
            cached=meter.cached,
            cache_creation=meter.cache_creation,
            total=behavior.total_tokens,
        )

    async def _complete(
        self, writer: asyncio.StreamWriter, meter: _Meter, ident: str, created: int, pieces: list[str], finish: str
    ) -> bool:
        """A whole (non-streamed) chat completion, with its usage."""
        meter.text = list(pieces)
        meter.bill("complete", usage_sent=True)
        return await self._json(
            writer,
            200,
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": meter.model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "".join(pieces)}, "finish_reason": finish}
                ],
                "usage": self._usage(meter),
            },
        )

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        reader: asyncio.StreamReader | None,
        meter: _Meter,
        body: dict,
        ident: str,
        created: int,
        pieces: list[str],
        finish: str,
    ) -> bool:
        """The completion as server-sent events, one chunk a piece, stalling, closing or leaving
        the usage out as `behavior` asks. A client that goes away mid-stream is billed for what
        was sent ("disconnected")."""
        behavior = meter.behavior
        if behavior.bad_chunk is not None and behavior.bad_chunk not in BAD_CHUNKS:
            raise ValueError(f"unknown bad_chunk {behavior.bad_chunk!r}")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        sse = _Events(writer, ident, created, meter.model, include_usage)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        )
        usage_sent = include_usage and behavior.usage
        try:
            await sse.send(sse.choice('{"role":"assistant","content":"","refusal":null}'))
            await self._send_reasoning(sse, reader, meter)
            await self._pause(behavior.first_token_delay, reader)
            if not await self._send_pieces(sse, reader, meter, pieces):
                return False
            # Billed before the end goes out: a client that returns at its finish finds the bill.
            meter.bill("complete", usage_sent=usage_sent)
            writer.write(sse.event(sse.choice("{}", finish)))
            if usage_sent:
                usage = json.dumps(self._usage(meter), separators=(",", ":"))
                writer.write(sse.event("[]", ',"usage":' + usage + "}"))
            data = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
            await writer.drain()
        except (_Gone, ConnectionError):
            meter.bill("disconnected")  # no second bill when it was billed complete
            return False
        return True

    async def _send_reasoning(self, sse: _Events, reader: asyncio.StreamReader | None, meter: _Meter) -> None:
        """The behaviour's reasoning deltas (content null beside them), each after its delay."""
        behavior = meter.behavior
        if not behavior.reasoning_chunks:
            return
        for thought in content_chunks(behavior.reasoning_text or DEFAULT_REASONING, behavior.reasoning_chunks):
            await self._pause(behavior.reasoning_delay, reader)
            if behavior.content_blocks:
                fields: dict = {"content": [{"type": "thinking", "thinking": thought}]}
            else:
                fields = {"content": None, behavior.reasoning_field: thought}
            await sse.send(sse.choice(json.dumps(fields, separators=(",", ":"))))
            meter.reasoning.append(thought)

    async def _send_pieces(
        self, sse: _Events, reader: asyncio.StreamReader | None, meter: _Meter, pieces: list[str]
    ) -> bool:
        """The answer's chunks; False when the behaviour cut the stream (stall, close, bad chunk)."""
        behavior = meter.behavior
        for sent, piece in enumerate(pieces):
            if behavior.bad_chunk is not None and sent >= behavior.bad_chunk_after:
                break
            if behavior.stall_after is not None and sent >= behavior.stall_after:
                meter.bill("stalled")
                await self._pause(3600, reader)  # until the client gives up or the server stops
            if behavior.close_after is not None and sent >= behavior.close_after:
                meter.bill("closed")
                sse.writer.transport.abort()
                return False
            if sent and behavior.chunk_delay:
                await asyncio.sleep(behavior.chunk_delay)
            if behavior.content_blocks:
                delta = json.dumps({"content": [{"type": "text", "text": piece}]}, separators=(",", ":"))
            else:
                delta = json.dumps({"content": piece}, separators=(",", ":"))
            await sse.send(sse.choice(delta))
            meter.text.append(piece)
        if behavior.bad_chunk is None:
            return True
        # A malformed chunk, billed with what went before it (before it is sent: a client that raises
        # on it finds the bill there); then nothing (as a stall) until the client gives up.
        meter.bill("bad_chunk")
        sse.writer.write(sse.frame(BAD_CHUNKS[behavior.bad_chunk].format(c=sse.prefix)))
        await sse.writer.drain()
        await self._pause(3600, reader)
        return False

    async def _anthropic_stream(
        self,
        writer: asyncio.StreamWriter,
        reader: asyncio.StreamReader | None,
        meter: _Meter,
        pieces: list[str],
        finish: str,
    ) -> bool:
        """Anthropic's Messages API stream: message_start with the input usage (cache reads and
        writes beside input_tokens), the reasoning as a thinking block, the answer as a text block,
        message_delta with output_tokens (thinking included), message_stop. A stall or a dropped
        connection (`stall_after`, `close_after`) comes within the text block."""
        behavior = meter.behavior

        async def send(kind: str, data: dict) -> None:
            frame = f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
            writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            await writer.drain()

        async def block(index: int, kind: str, texts: list[str], delay: float) -> None:
            await send(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": kind, kind: "", **({"signature": ""} if kind == "thinking" else {})},
                },
            )
            for sent, text in enumerate(texts):
                if kind == "text" and behavior.stall_after is not None and sent >= behavior.stall_after:
                    meter.bill("stalled")
                    await self._pause(3600, reader)  # until the client gives up or the server stops
                if kind == "text" and behavior.close_after is not None and sent >= behavior.close_after:
                    meter.bill("closed")
                    writer.transport.abort()
                    raise _Gone
                await self._pause(delay, reader)
                delta = {"type": f"{kind}_delta", kind: text}
                await send("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                (meter.reasoning if kind == "thinking" else meter.text).append(text)
            if kind == "thinking":
                delta = {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}
                await send("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            await send("content_block_stop", {"type": "content_block_stop", "index": index})

        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        )
        usage = {
            "input_tokens": meter.prompt - meter.cached - meter.cache_creation,
            "cache_creation_input_tokens": meter.cache_creation,
            "cache_read_input_tokens": meter.cached,
            "output_tokens": 1,
        }
        message = {
            "id": f"msg_fake{self._counter}",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": meter.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        try:
            await send("message_start", {"type": "message_start", "message": message})
            await send("ping", {"type": "ping"})
            index = 0
            if behavior.reasoning_chunks:
                thoughts = content_chunks(behavior.reasoning_text or DEFAULT_REASONING, behavior.reasoning_chunks)
                await block(0, "thinking", thoughts, behavior.reasoning_delay)
                index = 1
            await self._pause(behavior.first_token_delay, reader)
            await block(index, "text", pieces, behavior.chunk_delay)
            output = meter.answer_tokens() + meter.reasoning_tokens(complete=True)
            stop = "max_tokens" if finish == "length" else "end_turn"
            await send(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": output},
                },
            )
            meter.bill("complete", usage_sent=True)  # before the end goes out, as above
            await send("message_stop", {"type": "message_stop"})
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (_Gone, ConnectionError):
            meter.bill("disconnected")
            return False
        return True

    @staticmethod
    async def _pause(seconds: float, reader: asyncio.StreamReader | None) -> None:
        """Sleeps `seconds`; raises _Gone as soon as the client closes the connection (so a call
        it gave up on is billed then, not when the sleep ends)."""
        if seconds <= 0:
            return
        if reader is None or seconds < 0.05:
            await asyncio.sleep(seconds)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(0.02, left))
            if reader.at_eof():
                raise _Gone

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
