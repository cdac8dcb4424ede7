"""OpenAI-compatible chat completions streamed through httpx: the lean path's HTTP client
before issue 16.

Kept beside openai_compat.py as the endpoint transport "httpx", the fallback for a server the
lean path's own HTTP client trips on. Its chunks are read by the lean path's own reader
(`openai_compat._ChunkReader`, msgspec), so its events, errors, billing and usage are the
lean path's; what differs is httpx (about 230 µs of CPU per spaced chunk through httpx's
stack when it also decoded with json.loads, against the lean path's ~50: docs/streaming-floor.md)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import httpx

from services.common.llm.base import (
    CompletionRequest,
    ProviderError,
    StreamEvent,
)
from services.common.llm.guard import (
    Watchdog,
    begin_call,
    safe_text,
)
from services.common.llm.openai_compat import _ChunkReader, _completion, _sse_payloads, http_error, request_body
from services.common.llm.settings import LLMSettings


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
        key, secrets, watchdog = begin_call(self.settings, self.api_key_env)
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
