"""The lean path: OpenAI-compatible chat completions streamed through httpx and a small SSE reader.

Why not LiteLLM for these: profiled on a 200-chunk stream from a local OpenAI-compatible
server (cProfile, LiteLLM 1.110.2), about 0.65 ms of CPU per chunk went: ~55% into the
`openai` SDK it calls (SSE decoding, then `construct_type` building a typed
ChatCompletionChunk per chunk), ~35% into LiteLLM's `CustomStreamWrapper.chunk_creator`
re-wrapping that into a ModelResponseStream (hidden params, delta accumulation, attribute
copying), the rest in the transport. No LiteLLM setting skips either (disabling its streaming
logging and token counter takes ~10% off; litellm_provider.py sets both). Here a chunk costs
one `json.loads` and a few dict lookups on top of httpx's raw read: about 1x a bare httpx SSE
reader of the same stream (tests/benchmarks/bench_relay.py; target <= 2x). LiteLLM stays for
every other provider.

What a chunk may carry (`_ChunkReader`): `delta.content` as a string (the answer) or as a list of
typed blocks (text blocks are the answer, thinking blocks reasoning); `delta.reasoning_content`
(DeepSeek, vLLM) or `delta.reasoning` (OpenRouter, newer vLLM) as reasoning (ReasoningDelta);
`finish_reason`; `usage` (read into our normal form by conventions.py); `error`. Anything else
(a chunk that is not a JSON object, choices that are not a list, content a number...) is a
billed ProviderBadChunk with what streamed before it: no TypeError or KeyError leaves here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from email.utils import parsedate_to_datetime
from time import time as _now
from typing import Any

import httpx

from services.common.llm.base import (
    Completion,
    CompletionRequest,
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
    block_events,
    call_secrets,
    reported_usage,
    safe_text,
)
from services.common.llm.settings import LLMSettings

log = logging.getLogger(__name__)

_loads = json.loads
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


def http_error(model: str, status: int, headers: httpx.Headers | dict, body: bytes, secrets: Sequence[str]) -> LLMError:
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


class OpenAICompatProvider:
    """Streams `<prefix>/<model>` from `api_base` as `<model>`, with the key from `api_key_env`."""

    def __init__(self, settings: LLMSettings, *, api_base: str, api_key_env: str | None, openai: bool = False):
        self.settings = settings
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        # OpenAI itself: max_completion_tokens (its reasoning models refuse max_tokens); other
        # OpenAI-compatible servers (vLLM, Ollama, llama.cpp...) all read max_tokens.
        self.openai = openai
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                # read=None: the watchdog owns read timing (first token, stalls), not httpx.
                timeout=httpx.Timeout(connect=self.settings.llm_connect_timeout, read=None, write=30.0, pool=None),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
                follow_redirects=False,
                trust_env=False,  # no proxy or netrc from the environment; endpoints come from settings only
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _body(self, request: CompletionRequest) -> dict:
        model = request.model.split("/", 1)[1]
        body: dict = {
            "model": model,
            "messages": [m.as_dict() for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            ("max_completion_tokens" if self.openai else "max_tokens"): request.max_tokens,
        }
        # OpenAI's reasoning models (o1, o3, o4-mini, gpt-5...) accept only the default temperature.
        if request.temperature is not None and not (self.openai and _REASONING_MODEL.match(model)):
            body["temperature"] = request.temperature
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    async def _send(
        self, request: CompletionRequest, key: str | None, watchdog: Watchdog, secrets: Sequence[str]
    ) -> httpx.Response:
        """The streaming response of a 200 answer; a typed error for anything else."""
        model = request.model
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}  # aiter_raw: no decoding
        if key:
            headers["Authorization"] = f"Bearer {key}"
        client = self._http()
        watchdog.begin()
        try:
            response = await client.send(
                client.build_request("POST", self.url, json=self._body(request), headers=headers), stream=True
            )
            if response.status_code != 200:
                try:
                    body = await response.aread()
                finally:
                    await response.aclose()
                raise http_error(model, response.status_code, response.headers, body, secrets)
            return response
        except asyncio.CancelledError:
            if watchdog.timed_out():
                raise watchdog.error(model, "") from None
            raise
        except httpx.HTTPError as error:
            raise ProviderError(
                safe_text(f"{model}: {type(error).__name__}: {error}", secrets), model=model, retryable=True
            ) from None
        finally:
            watchdog.end()

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamEvent, None]:
        """The call's events: TextDelta (answer), ReasoningDelta (`reasoning_content` or
        `reasoning` deltas, thinking blocks), then one Completion. Raises typed LLMErrors only;
        every error after the provider answered 200 is `billed`, with what streamed before it."""
        model = request.model
        key = self.settings.provider_key(self.api_key_env)
        secrets = call_secrets(self.settings, key)
        watchdog = Watchdog(self.settings.llm_first_token_timeout, self.settings.llm_stall_timeout)
        reader = _ChunkReader(model, watchdog, secrets)
        done = False
        response: httpx.Response | None = None
        try:
            response = await self._send(request, key, watchdog, secrets)
            buffer = b""
            chunks = response.aiter_raw()
            feed = reader.feed
            while not done:
                data = await _read(chunks, watchdog, reader)
                if data is None:
                    break
                payloads, buffer, done = _sse_payloads(buffer + data)
                for payload in payloads:
                    for event in feed(payload):
                        yield event
        finally:
            watchdog.close()
            if response is not None:
                await response.aclose()
        yield _completion(request, reader, done)


class _ChunkReader:
    """One stream's chunks read into events, and what they carried: the answer (`parts`), the
    reasoning, the last usage and finish reason. Any shape it cannot read is a ProviderBadChunk,
    never a TypeError or KeyError; a chunk that carries anything ends the first-token wait."""

    __slots__ = ("finish_reason", "model", "parts", "reasoning", "secrets", "usage", "waiting", "watchdog")

    def __init__(self, model: str, watchdog: Watchdog, secrets: Sequence[str]):
        self.model = model
        self.watchdog = watchdog
        self.secrets = secrets
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.usage: dict | None = None
        self.finish_reason: object = None
        self.waiting = True

    def feed(self, payload: bytes) -> list[TextDelta | ReasoningDelta]:
        """The events of one SSE data payload (most often one TextDelta)."""
        try:
            chunk = _loads(payload)
        except ValueError:
            raise self.bad("a chunk that is not JSON", payload) from None
        if type(chunk) is not dict:
            raise self.bad("a chunk that is not an object", payload)
        choices = chunk.get("choices")
        events = self.choice(choices, payload) if choices else []
        usage = chunk.get("usage")
        if usage:
            if type(usage) is not dict:
                raise self.bad("usage that is not an object", payload)
            self.usage = usage
            self.arrived()
        elif "error" in chunk:
            raise ProviderError(
                safe_text(f"{self.model}: error in stream: {str(chunk['error'])[:300]}", self.secrets),
                model=self.model,
                partial_text="".join(self.parts),
                partial_reasoning="".join(self.reasoning),
                retryable=not self.parts,
                billed=True,
            )
        return events

    def choice(self, choices: object, payload: bytes) -> list[TextDelta | ReasoningDelta]:
        """The events of a chunk's first choice (we ask for one)."""
        try:
            choice = choices[0]  # type: ignore[index]
            delta = choice.get("delta")
            if delta:
                content = delta.get("content")
                thought = delta.get("reasoning_content") or delta.get("reasoning")
            else:
                content = thought = None
            finish_reason = choice.get("finish_reason")
        except (AttributeError, KeyError, TypeError):
            raise self.bad("a choice of unknown shape", payload) from None
        if finish_reason:
            self.finish_reason = finish_reason
            self.arrived()
        if thought is None and type(content) is str:  # the answer's chunks: the hot path
            if not content:
                return []
            if self.waiting:
                self.arrived()
            self.parts.append(content)
            return [TextDelta(content)]
        return self.mixed(content, thought, payload)

    def mixed(self, content: object, thought: object, payload: bytes) -> list[TextDelta | ReasoningDelta]:
        """The events of a delta with reasoning, or with a content that is not a string."""
        if not content and not thought:
            return []
        self.arrived()
        events: list[TextDelta | ReasoningDelta] = []
        if thought:
            if type(thought) is not str:
                raise self.bad("reasoning that is not a string", payload)
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
            f"{self.model}: the provider streamed {what}: {shown}",
            model=self.model,
            partial_text="".join(self.parts),
            partial_reasoning="".join(self.reasoning),
            retryable=what.endswith("not JSON") and not self.parts,
            billed=True,
        )

    def error(self, make: Callable[..., LLMError], message: str, **kwargs: Any) -> LLMError:
        """An error after the 200, with what streamed before it."""
        return make(
            message,
            model=self.model,
            partial_text="".join(self.parts),
            partial_reasoning="".join(self.reasoning),
            billed=True,
            **kwargs,
        )


async def _read(chunks: AsyncIterator[bytes], watchdog: Watchdog, reader: _ChunkReader) -> bytes | None:
    """The next bytes of the stream, None at its end; a stall or a broken stream is a typed
    error (billed: the provider had answered 200)."""
    watchdog.begin()
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None
    except asyncio.CancelledError:
        if watchdog.timed_out():
            raise watchdog.error(reader.model, "".join(reader.parts), "".join(reader.reasoning), billed=True) from None
        raise
    except httpx.HTTPError as error:
        raise reader.error(
            ProviderError,
            safe_text(f"{reader.model}: stream broke: {type(error).__name__}: {error}", reader.secrets),
            retryable=not reader.parts,
        ) from None
    finally:
        watchdog.end()


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


def _completion(request: CompletionRequest, reader: _ChunkReader, done: bool) -> Completion:
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
