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
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from email.utils import parsedate_to_datetime
from time import time as _now

import httpx

from services.common.llm.base import (
    Completion,
    CompletionRequest,
    LLMError,
    ProviderError,
    RateLimited,
    StreamEvent,
    TextDelta,
)
from services.common.llm.guard import (
    Watchdog,
    call_secrets,
    estimated_usage,
    safe_text,
    usage_from_openai,
)
from services.common.llm.settings import LLMSettings

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
        model = request.model
        key = self.settings.provider_key(self.api_key_env)
        secrets = call_secrets(self.settings, key)
        watchdog = Watchdog(self.settings.llm_first_token_timeout, self.settings.llm_stall_timeout)
        parts: list[str] = []
        usage = None
        finish_reason = None
        done = False
        response: httpx.Response | None = None
        try:
            response = await self._send(request, key, watchdog, secrets)
            buffer = b""
            chunks = response.aiter_raw()
            loads = json.loads
            while not done:
                data = await _read(chunks, watchdog, model, parts, secrets)
                if data is None:
                    break
                payloads, buffer, done = _sse_payloads(buffer + data)
                for payload in payloads:
                    try:
                        chunk = loads(payload)
                    except ValueError:
                        raise ProviderError(
                            f"{model}: malformed chunk in stream",
                            model=model,
                            partial_text="".join(parts),
                            retryable=not parts,
                        ) from None
                    choices = chunk.get("choices")
                    if choices:
                        choice = choices[0]
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            if not parts:
                                watchdog.first_token()
                            parts.append(content)
                            yield TextDelta(content)
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    elif "error" in chunk:
                        raise ProviderError(
                            safe_text(f"{model}: error in stream: {str(chunk['error'])[:300]}", secrets),
                            model=model,
                            partial_text="".join(parts),
                            retryable=not parts,
                        )
        finally:
            watchdog.close()
            if response is not None:
                await response.aclose()
        yield _completion(request, "".join(parts), usage, finish_reason, done)


async def _read(
    chunks: AsyncIterator[bytes], watchdog: Watchdog, model: str, parts: list[str], secrets: Sequence[str]
) -> bytes | None:
    """The next bytes of the stream, None at its end; a stall or a broken stream is a typed error."""
    watchdog.begin()
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None
    except asyncio.CancelledError:
        if watchdog.timed_out():
            raise watchdog.error(model, "".join(parts)) from None
        raise
    except httpx.HTTPError as error:
        raise ProviderError(
            safe_text(f"{model}: stream broke: {type(error).__name__}: {error}", secrets),
            model=model,
            partial_text="".join(parts),
            retryable=not parts,
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


def _completion(
    request: CompletionRequest, text: str, usage: dict | None, finish_reason: str | None, done: bool
) -> Completion:
    """The last event: the provider's usage (estimated when it sent none) and why it stopped."""
    if finish_reason is None and not done:
        raise ProviderError(
            f"{request.model}: stream ended before its end", model=request.model, partial_text=text, retryable=not text
        )
    return Completion(
        model=request.model,
        usage=usage_from_openai(usage) if usage else estimated_usage(request.model, request.messages, text),
        finish_reason="length" if finish_reason == "length" else "stop",
    )
