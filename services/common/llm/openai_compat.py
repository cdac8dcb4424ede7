"""The lean path: OpenAI-compatible chat completions streamed over our own keep-alive HTTP/1.1
connections (wire.py: the loop's transports and httptools' parser), each chunk decoded by msgspec.

Why not LiteLLM for these: profiled on a 200-chunk stream from a local OpenAI-compatible
server (cProfile, LiteLLM 1.110.2), about 0.65 ms of CPU per chunk went: ~55% into the
`openai` SDK it calls (SSE decoding, then `construct_type` building a typed
ChatCompletionChunk per chunk), ~35% into LiteLLM's `CustomStreamWrapper.chunk_creator`
re-wrapping that into a ModelResponseStream (hidden params, delta accumulation, attribute
copying), the rest in the transport. No LiteLLM setting skips either. LiteLLM stays for every
other provider.

Why not httpx (this path's reader until issue 16, kept as the endpoint transport "httpx",
openai_httpx.py): a chunk that comes in its own network read, as a real model's tokens do, cost
about 180 to 240 µs of CPU through httpx, httpcore, h11 and anyio; here it is one llhttp parse
in the protocol's `data_received`, one msgspec decode into a Struct of only the fields we read,
and the events: about 50 µs on uvloop (tests/benchmarks/bench_stream_floor.py measures the
candidates side by side; docs/streaming-floor.md has the figures and the choice).

Two ways to read a call: `stream` yields the events from the reading task (one wake per network
read, through the router's and this async generator); `stream_to` pushes each delta to a sink
inside the protocol's callback of the read that brought it (`_Push`), and the task wakes once,
at the end, for the Completion. The orchestrator reads a debater's turn with `stream_to`.

What a chunk may carry (`_Chunk`, `_ChunkReader`): `delta.content` as a string (the answer) or
as a list of typed blocks (text blocks are the answer, thinking blocks reasoning);
`delta.reasoning_content` (DeepSeek, vLLM) or `delta.reasoning` (OpenRouter, newer vLLM) as
reasoning (ReasoningDelta); `finish_reason`; `usage` (read into our normal form by
conventions.py); `error`. Every other field is skipped unread. A chunk that is not JSON, or whose
fields we read are of another type (a chunk that is not an object, choices that are not a list,
content a number...), is a billed ProviderBadChunk with what streamed before it: msgspec checks
the types as it decodes, and no TypeError or KeyError leaves here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from time import time as _now
from typing import Any, Protocol

import msgspec

from services.common.llm.base import (
    Completion,
    CompletionRequest,
    DeltaSink,
    LLMError,
    ProviderError,
    RateLimited,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
)
from services.common.llm.guard import (
    ProviderBadChunk,
    Watchdog,
    begin_call,
    block_events,
    reported_usage,
    safe_text,
)
from services.common.llm.settings import LLMSettings
from services.common.llm.wire import HttpPool, Response, WireError

log = logging.getLogger(__name__)

_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - _now())
    except (TypeError, ValueError):
        return None


def http_error(model: str, status: int, headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> LLMError:
    """The typed error for a non-200 answer; the provider's message is kept short, `secrets` masked."""
    detail = ""
    try:
        payload = json.loads(body)
        error = payload.get("error") if isinstance(payload, dict) else None
        detail = str(error.get("message") if isinstance(error, dict) else error or payload)
    except ValueError:
        detail = body[:200].decode("utf-8", "replace")
    message = safe_text(f"{model}: provider answered HTTP {status}: {detail[:300]}", secrets)
    if status == 429:
        return RateLimited(
            message,
            model=model,
            retry_after=retry_after_seconds(headers.get("retry-after")),
            metadata={"status": str(status)},
        )
    return ProviderError(message, model=model, retryable=status in _RETRYABLE_STATUS, metadata={"status": str(status)})


class _Delta(msgspec.Struct, gc=False):
    content: str | list[Any] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class _Choice(msgspec.Struct, gc=False):
    delta: _Delta | None = None
    finish_reason: Any = None


class _Chunk(msgspec.Struct, gc=False):
    """The fields of a chat.completion.chunk that we read; the others are skipped unread."""

    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
    error: Any = msgspec.UNSET


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_encode = msgspec.json.encode
_UNSET = msgspec.UNSET
_ValidationError = msgspec.ValidationError
_DecodeError = msgspec.DecodeError


def request_body(request: CompletionRequest, *, openai: bool) -> dict:
    """The chat completion request of `request`, streamed with its usage. `openai`: OpenAI itself,
    which takes max_completion_tokens (its reasoning models refuse max_tokens); other
    OpenAI-compatible servers (vLLM, Ollama, llama.cpp...) all read max_tokens."""
    model = request.model.split("/", 1)[1]
    body: dict = {
        "model": model,
        "messages": [m.as_dict() for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        ("max_completion_tokens" if openai else "max_tokens"): request.max_tokens,
    }
    # OpenAI's reasoning models (o1, o3, o4-mini, gpt-5...) accept only the default temperature.
    if request.temperature is not None and not (openai and _REASONING_MODEL.match(model)):
        body["temperature"] = request.temperature
    if request.seed is not None:
        body["seed"] = request.seed
    return body


class OpenAICompatProvider:
    """Streams `<prefix>/<model>` from `api_base` as `<model>`, with the key from `api_key_env`,
    over one keep-alive connection pool (wire.HttpPool) of its own. (anthropic_native.py is this
    with Anthropic's request and events: `path`, `_body`, `_headers` and `_reader`.)"""

    path = "/chat/completions"

    def __init__(self, settings: LLMSettings, *, api_base: str, api_key_env: str | None, openai: bool = False):
        self.settings = settings
        self.api_base = api_base
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.openai = openai
        self._pool: HttpPool | None = None

    def pool(self) -> HttpPool:
        if self._pool is None:
            self._pool = HttpPool(self.api_base, connect_timeout=self.settings.llm_connect_timeout, max_idle=256)
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    def _body(self, request: CompletionRequest) -> dict:
        return request_body(request, openai=self.openai)

    def _headers(self, key: str | None) -> bytes:
        """The request's header lines (after Host and Content-Length), each ending in CRLF."""
        headers = b"Content-Type: application/json\r\nAccept: text/event-stream\r\nAccept-Encoding: identity\r\n"
        return headers + b"Authorization: Bearer " + key.encode() + b"\r\n" if key else headers

    def _reader(self, model: str, watchdog: Watchdog, secrets: Sequence[str]) -> _ChunkReader:
        return _ChunkReader(model, watchdog, secrets)

    async def _send(
        self, request: CompletionRequest, key: str | None, watchdog: Watchdog, secrets: Sequence[str]
    ) -> Response:
        """The streaming response of a 200 answer; a typed error for anything else."""
        model = request.model
        if key and ("\r" in key or "\n" in key):
            raise ProviderError(f"{model}: the provider key holds a line break", model=model)
        pool = self.pool()
        watchdog.begin()
        try:
            response = await pool.request(pool.path(self.path), self._headers(key), _encode(self._body(request)))
            if response.status != 200:
                try:
                    body = await response.aread()
                finally:
                    response.release()
                raise http_error(model, response.status, response.headers, body, secrets)
            return response
        except asyncio.CancelledError:
            if watchdog.timed_out():
                raise watchdog.error(model, "") from None
            raise
        except WireError as error:
            raise ProviderError(safe_text(f"{model}: {error}", secrets), model=model, retryable=True) from None
        finally:
            watchdog.end()

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamEvent, None]:
        """The call's events: TextDelta (answer), ReasoningDelta (`reasoning_content` or
        `reasoning` deltas, thinking blocks), then one Completion. Raises typed LLMErrors only;
        every error after the provider answered 200 is `billed`, with what streamed before it."""
        model = request.model
        key, secrets, watchdog = begin_call(self.settings, self.api_key_env)
        reader = self._reader(model, watchdog, secrets)
        done = False
        response: Response | None = None
        try:
            response = await self._send(request, key, watchdog, secrets)
            buffer = b""
            read = response.read
            feed = reader.feed
            begin, end = watchdog.begin, watchdog.end
            while not done:
                begin()
                try:
                    data = await read()
                except asyncio.CancelledError:
                    if watchdog.timed_out():
                        raise watchdog.error(model, reader.text(), reader.thought(), billed=True) from None
                    raise
                except WireError as error:
                    raise reader.error(
                        ProviderError,
                        safe_text(f"{model}: stream broke: {error}", secrets),
                        retryable=not reader.parts,
                    ) from None
                finally:
                    end()
                if data is None:
                    break
                payloads, buffer, done = _split(buffer + data if buffer else data)
                for payload in payloads:
                    for event in feed(payload):
                        yield event
                if reader.ended:
                    done = True
        finally:
            watchdog.close()
            if response is not None:
                response.release()
        yield _completion(request, reader, done)

    async def stream_to(self, request: CompletionRequest, sink: DeltaSink) -> Completion:
        """`stream`'s events pushed: each delta handed to `sink` inside the protocol's callback of
        the network read that brought it (no task step, no async generator per chunk), the
        Completion returned. The same errors, billing and watchdog as `stream`."""
        model = request.model
        key, secrets, watchdog = begin_call(self.settings, self.api_key_env)
        reader = self._reader(model, watchdog, secrets)
        response: Response | None = None
        try:
            response = await self._send(request, key, watchdog, secrets)
            push = _Push(reader, sink, watchdog)
            early = response.take()  # body that came with the headers
            watchdog.begin()
            try:
                if not (early and push(early)):
                    response.consumer = push
                    while not push.stop and not response.complete and response.error is None:
                        await response.wait()
            except asyncio.CancelledError:
                if watchdog.timed_out():
                    raise watchdog.error(model, reader.text(), reader.thought(), billed=True) from None
                raise
            finally:
                watchdog.end()
            if push.failure is not None:
                raise push.failure
            if response.error is not None and not push.done:
                raise reader.error(
                    ProviderError,
                    safe_text(f"{model}: stream broke: {response.error}", secrets),
                    retryable=not reader.parts,
                ) from None
        finally:
            watchdog.close()
            if response is not None:
                response.release()
        return _completion(request, reader, push.done)


class _Push:
    """The consumer of a pushed stream (wire.Response.consumer): each network read's body split
    into SSE payloads, read into events and handed to the sink, inside the protocol's callback.
    Wakes the waiting task only at the stream's end or at a failure (kept in `failure`: the
    task raises it).

    The short path: a read that is one whole event of one `data: {...}` line, as a streamed
    token comes, carrying an answer delta and nothing else, once the first token came (the
    OpenAI-compatible chunk only: a reader of another format, Anthropic's, has `short` off). It
    is sliced, decoded by msgspec, its text appended and handed on, and the watchdog's clock
    stamped, with everything bound once per stream: no SSE split, no event list (`_token`).
    Anything else (a split event, several events, comments, CRLF, [DONE],
    reasoning, a finish reason, usage, an error, a chunk msgspec refuses) takes the general
    path, which reads it as `stream` does (and raises its typed errors).

    The template: a provider sends a stream's token chunks byte for byte alike but for the
    text (the same id, created, model and fields, in the same order). The first token chunks
    read by msgspec teach it (`_template`): the read's bytes before the text (`head`, up to
    `"delta":{"content":"`) and after it (`tail`), checked by decoding `head + "x" + tail`,
    which must be an answer chunk whose text is "x". A later read that starts with `head`
    and ends with `tail` is then that chunk with another text: when the bytes between hold
    no quote, no backslash and no control byte (the raw text of a JSON string without
    escapes: the string, and so the chunk's structure, end where the template's do) and are
    UTF-8, they are the text, decoded without msgspec; anything else goes on as above. A
    provider whose chunks differ elsewhere (a per-chunk field) never matches it."""

    __slots__ = (
        "append",
        "buffer",
        "cut",
        "done",
        "failure",
        "head",
        "learn",
        "push",
        "reader",
        "short",
        "sink",
        "stop",
        "tail",
        "time",
        "watchdog",
    )

    def __init__(self, reader: _ChunkReader, sink: DeltaSink, watchdog: Watchdog):
        self.reader = reader
        self.push = reader.push
        self.append = reader.parts.append
        self.short = type(reader) is _ChunkReader
        self.sink = sink
        self.watchdog = watchdog
        self.time = watchdog.time
        self.buffer = b""
        self.done = False  # the stream said it ended ([DONE], message_stop)
        self.stop = False  # nothing more to read: ended or failed
        self.failure: Exception | None = None
        self.head = b""  # the template (see above): a token read's bytes before its text, once learnt
        self.tail = b""  # and after it
        self.cut = 0  # -len(tail)
        self.learn = _TEMPLATE_TRIES  # token chunks left to learn the template from

    def __call__(self, data: bytes) -> bool:
        if self.stop:
            return True
        try:
            head = self.head
            if head and not self.buffer and data.startswith(head) and data.endswith(self.tail):
                # A token chunk of the template's shape: its text is the bytes in between.
                raw = data[len(head) : self.cut]
                if raw and len(raw.translate(None, _ESCAPED)) == len(raw):
                    try:
                        text = raw.decode()
                    except UnicodeDecodeError:
                        text = ""  # msgspec refuses it too: the general path raises its typed error
                    if text:
                        self.append(text)
                        self.sink(TextDelta(text))
                        self.watchdog.read_at = self.time()
                        return False
            if (
                not self.buffer
                and data[:7] == b"data: {"
                and data[-2:] == b"\n\n"
                and data.find(b"\n", 7) == len(data) - 2
            ):
                # One whole event of one data line in this read, as a streamed token comes.
                payload = data[6:-2]
                if self.short and not self.reader.waiting and self._token(data, payload):
                    return False
                self.push(payload, self.sink)
                done = False
            else:
                payloads, self.buffer, done = _split(self.buffer + data if self.buffer else data)
                push, sink = self.push, self.sink
                for payload in payloads:
                    push(payload, sink)
        except Exception as error:  # noqa: BLE001 - an LLMError, or the sink's own: raised in the task
            self.failure = error
            self.stop = True
            return True
        if done or self.reader.ended:
            self.done = self.stop = True
            return True
        self.watchdog.read_at = self.time()
        return False

    def _token(self, data: bytes, payload: bytes) -> bool:
        """The short path by msgspec: whether `payload` (the one event of the read `data`) was
        a token chunk, handed on (and the template learnt from it, while not yet known)."""
        try:
            chunk = _decode_chunk(payload)
        except (msgspec.MsgspecError, UnicodeDecodeError):
            return False  # the general path raises its typed error
        content = _answer(chunk)
        if content is None:
            return False
        if self.learn:
            self._template(data, content)
        self.append(content)
        self.sink(TextDelta(content))
        self.watchdog.read_at = self.time()
        return True

    def _template(self, data: bytes, text: str) -> None:
        """Learns the template from `data`, a read of one token chunk whose text is `text`, when
        the text stands in it as is (no escapes) after the chunk's only `"delta":{"content":"`."""
        self.learn -= 1
        if data.count(_CONTENT) != 1:
            return
        start = data.index(_CONTENT) + len(_CONTENT)
        raw = text.encode()
        end = start + len(raw)
        if data[start:end] != raw or data[end : end + 1] != b'"':
            return
        head, tail = data[:start], data[end:]
        try:
            probe = _decode_chunk(head[6:] + b"x" + tail[:-2])  # without "data: " and the blank line
        except (msgspec.MsgspecError, UnicodeDecodeError):
            return
        if _answer(probe) == "x":
            self.head, self.tail, self.cut = head, tail, -len(tail)
            self.learn = 0


# The template's text: bytes that a JSON string holds only escaped (control bytes, quote, backslash).
_ESCAPED = bytes(range(0x20)) + b'"\\'
_CONTENT = b'"delta":{"content":"'
_TEMPLATE_TRIES = 4


def _answer(chunk: _Chunk) -> str | None:
    """The text of a chunk that carries an answer's text and nothing else (a streamed token: a
    non-empty string content; no reasoning, finish reason, usage or error); None for any other."""
    choices = chunk.choices
    if choices and chunk.usage is None and chunk.error is _UNSET:
        choice = choices[0]
        delta = choice.delta
        if delta is not None and not choice.finish_reason:
            content = delta.content
            if type(content) is str and content and delta.reasoning_content is None and delta.reasoning is None:
                return content
    return None


def _split(data: bytes) -> tuple[list[bytes], bytes, bool]:
    """_sse_payloads, with a shortcut for one whole event of one data line, as most reads of
    a streamed token are."""
    if data.endswith(b"\n\n") and data.count(b"\n\n") == 1 and b"\r" not in data:
        payloads = _one_event(data)
        if payloads is not None:
            return payloads, b"", False
    return _sse_payloads(data)


def _one_event(data: bytes) -> list[bytes] | None:
    """The payload of `data`, one event of one `data:` line (after an `event:` line, if any)
    ending in a blank line; None for anything else (comments, several data lines, [DONE]: the
    general reader takes those)."""
    start = data.find(b"\n") + 1 if data.startswith(b"event:") else 0
    if data.startswith(b"data: ", start) and data.find(b"\n", start) == len(data) - 2:
        payload = data[start + 6 : -2]
        if payload != b"[DONE]":
            return [payload]
    return None


class _ChunkReader:
    """One stream's chunks read into events, and what they carried: the answer (`parts`), the
    reasoning, the last usage and finish reason. Any shape it cannot read is a ProviderBadChunk,
    never a TypeError or KeyError; a chunk that carries anything ends the first-token wait."""

    __slots__ = ("ended", "finish_reason", "model", "parts", "reasoning", "secrets", "usage", "waiting", "watchdog")

    def __init__(self, model: str, watchdog: Watchdog, secrets: Sequence[str]):
        self.ended = False  # the stream said it ended (Anthropic's message_stop; OpenAI's is [DONE])
        self.model = model
        self.watchdog = watchdog
        self.secrets = secrets
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.usage: dict | None = None
        self.finish_reason: object = None
        self.waiting = True

    def text(self) -> str:
        return "".join(self.parts)

    def thought(self) -> str:
        return "".join(self.reasoning)

    def decode(self, payload: bytes) -> _Chunk:
        try:
            return _decode_chunk(payload)
        except _ValidationError as error:
            raise self.bad(f"a chunk of unknown shape ({error})", payload) from None
        except (_DecodeError, UnicodeDecodeError):  # msgspec raises the latter for bytes that are not UTF-8
            raise self.bad("a chunk that is not JSON", payload) from None

    def push(self, payload: bytes, sink: DeltaSink) -> None:
        """`feed`, its events handed to `sink`: an answer chunk (the hot path) without building
        a list of events."""
        chunk = self.decode(payload)
        content = _answer(chunk)
        if content is not None:
            if self.waiting:
                self.arrived()
            self.parts.append(content)
            sink(TextDelta(content))
            return
        for event in self.read(chunk, payload):
            sink(event)

    def feed(self, payload: bytes) -> list[TextDelta | ReasoningDelta]:
        """The events of one SSE data payload (most often one TextDelta)."""
        return self.read(self.decode(payload), payload)

    def read(self, chunk: _Chunk, payload: bytes) -> list[TextDelta | ReasoningDelta]:
        """The events of a decoded chunk."""
        choices = chunk.choices
        if choices:
            choice = choices[0]
            delta = choice.delta
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
                self.arrived()
            if delta is not None:
                content = delta.content
                if type(content) is str and delta.reasoning_content is None and delta.reasoning is None:
                    # the answer's chunks: the hot path
                    if not content:
                        events: list[TextDelta | ReasoningDelta] = []
                    else:
                        if self.waiting:
                            self.arrived()
                        self.parts.append(content)
                        events = [TextDelta(content)]
                else:
                    events = self.mixed(content, delta.reasoning_content or delta.reasoning, payload)
            else:
                events = []
        else:
            events = []
        if chunk.usage:
            self.usage = chunk.usage
            self.arrived()
        elif chunk.error is not _UNSET:
            raise ProviderError(
                safe_text(f"{self.model}: error in stream: {str(chunk.error)[:300]}", self.secrets),
                model=self.model,
                partial_text=self.text(),
                partial_reasoning=self.thought(),
                retryable=not self.parts,
                billed=True,
            )
        return events

    def mixed(self, content: object, thought: str | None, payload: bytes) -> list[TextDelta | ReasoningDelta]:
        """The events of a delta with reasoning, or with a content that is not a string."""
        if not content and not thought:
            return []
        self.arrived()
        events: list[TextDelta | ReasoningDelta] = []
        if thought:
            self.reasoning.append(thought)
            events.append(ReasoningDelta(thought))
        if type(content) is str:
            self.parts.append(content)
            events.append(TextDelta(content))
        elif content:
            try:
                blocks = block_events(content)
            except ValueError as error:
                raise self.bad(str(error), payload) from None
            for event in blocks:
                (self.parts if type(event) is TextDelta else self.reasoning).append(event.text)
            events += blocks
        return events

    def arrived(self) -> None:
        """A chunk carried something of the call: the first-token wait is over."""
        if self.waiting:
            self.waiting = False
            self.watchdog.first_token()

    def bad(self, what: str, payload: bytes) -> ProviderBadChunk:
        """The typed error of a chunk we cannot read (billed: it came after a 200). A chunk that
        is not JSON may be a transport fault, retryable while no text went out; a shape is not."""
        shown = safe_text(payload[:120].decode("utf-8", "replace"), self.secrets)
        return ProviderBadChunk(
            safe_text(f"{self.model}: the provider streamed {what}: {shown}", self.secrets),
            model=self.model,
            partial_text=self.text(),
            partial_reasoning=self.thought(),
            retryable=what.endswith("not JSON") and not self.parts,
            billed=True,
        )

    def error(self, make: Callable[..., LLMError], message: str, **kwargs: Any) -> LLMError:
        """An error after the 200, with what streamed before it."""
        return make(
            message,
            model=self.model,
            partial_text=self.text(),
            partial_reasoning=self.thought(),
            billed=True,
            **kwargs,
        )


def _sse_payloads(buffer: bytes) -> tuple[list[bytes], bytes, bool]:
    """Server-sent events: the data payloads of the complete events in `buffer` (an event's
    lines after a [DONE] are dropped), the incomplete rest, and whether [DONE] came."""
    if b"\r" in buffer:
        buffer = buffer.replace(b"\r\n", b"\n")
    *events, rest = buffer.split(b"\n\n")
    payloads = []
    done = False
    for event in events:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue  # comments (": ping"), event names, ids
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            payloads.append(payload)
    return payloads, rest, done


class _Read(Protocol):
    """What a stream's reader knows at its end (_ChunkReader here, and openai_httpx's)."""

    parts: list[str]
    reasoning: list[str]
    usage: dict | None
    finish_reason: object

    def error(self, make: Callable[..., LLMError], message: str, **kwargs: Any) -> LLMError: ...


def _completion(request: CompletionRequest, reader: _Read, done: bool) -> Completion:
    """The last event: the provider's usage in our normal form (estimated when it sent none) and
    why it stopped."""
    text = "".join(reader.parts)
    if reader.finish_reason is None and not done:
        raise reader.error(ProviderError, f"{request.model}: stream ended before its end", retryable=not text)
    return Completion(
        model=request.model,
        usage=reported_usage(reader.usage, request.model, request.messages, text, "".join(reader.reasoning)),
        finish_reason="length" if reader.finish_reason == "length" else "stop",
    )
