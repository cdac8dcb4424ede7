"""The lean path's reader before issue 16: OpenAI-compatible chat completions streamed through
httpx, with the chunk read as a dict (json.loads and a few lookups).

Kept beside openai_compat.py as the endpoint transport "httpx": the benchmark of the streaming
path (tests/benchmarks/bench_stream_floor.py) measures it in the same run as the lean path, and
it is the fallback for a server the lean path's own HTTP client trips on. Its behaviour is the
lean path's (same events, errors, billing and usage); about 230 µs of CPU per spaced chunk
against the lean path's ~50 (docs/streaming-floor.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

import httpx

from services.common.llm.base import (
    CompletionRequest,
    LLMError,
    ProviderError,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
)
from services.common.llm.guard import (
    ProviderBadChunk,
    Watchdog,
    block_events,
    call_secrets,
    safe_text,
)
from services.common.llm.openai_compat import _completion, _sse_payloads, http_error, request_body
from services.common.llm.settings import LLMSettings

_loads = json.loads


class HttpxOpenAICompatProvider:
    """Streams `<prefix>/<model>` from `api_base` as `<model>` through httpx (the lean path's reader
    before issue 16), with the key from `api_key_env`."""

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
        return request_body(request, openai=self.openai)

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
